"""Tiny randomly initialised models of each supported family, built offline from their configs."""

from __future__ import annotations

import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

VOCAB = 64
FAMILIES = ["llama", "mistral", "qwen2", "gemma3_text", "gpt2"]


def tiny_model(family: str, n_layers: int = 2, dtype: torch.dtype = torch.float64, seed: int = 0):
    """A 2-layer, hidden-32 causal LM with grouped-query attention where the family has it."""
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=n_layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, rope_theta=100000.0))
    elif family == "mistral":
        model = MistralForCausalLM(MistralConfig(**common, sliding_window=8))
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif family == "gemma3_text":
        model = Gemma3ForCausalLM(Gemma3TextConfig(**common, head_dim=8, sliding_window=4,
                                                   layer_types=["sliding_attention", "full_attention"][:n_layers]
                                                   + ["full_attention"] * max(0, n_layers - 2)))
    elif family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=n_layers, n_head=4,
                                           n_positions=128, resid_pdrop=0.0, embd_pdrop=0.0,
                                           attn_pdrop=0.0, bos_token_id=0, eos_token_id=0))
    else:
        raise ValueError(family)
    for p in model.parameters():       # random init small enough to be tame; larger for signal
        torch.nn.init.normal_(p, std=0.2) if p.dim() > 1 else None
    model = model.to(dtype).eval()
    model.requires_grad_(False)
    return model
