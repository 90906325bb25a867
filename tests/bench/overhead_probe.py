"""Peak extra memory of one EAP pass or one training forward+backward, in a fresh process.

Usage: python overhead_probe.py eap|train|frozen TOKENS → prints the peak RSS increase (MiB) of the second
step over the resident size before it (the first step warms allocator pools up).
"""

from __future__ import annotations

import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from harness.circuit.batches import Positions, Sample, make_batch, target_nll
from harness.circuit.eap import score_batch
from harness.circuit.intervention import InstrumentedModel

# SmolLM2-135M-Instruct's shape (30 layers, width 576, 9 heads, 3 KV heads, rope θ 1e5).
SMOLLM2_SHAPE = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                     rope_theta=100000.0, tie_word_embeddings=True)


def smollm2_shaped_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE)).eval()
    return model


def smollm2_batch(tokens: int):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, SMOLLM2_SHAPE["vocab_size"], (tokens + 1,), generator=generator).tolist()
    half = tokens // 2
    sample = Sample("bench", tuple(ids[:half]), tuple(ids[half:]))
    return make_batch([sample], 0, Positions.ALL)


def eap_step(im: InstrumentedModel, batch) -> None:
    score_batch(im, batch)


def train_step(model: torch.nn.Module, batch) -> None:
    """A plain training forward+backward: parameter gradients, no instrumentation."""
    model.zero_grad(set_to_none=True)
    loss = target_nll(model(input_ids=batch.input_ids).logits, batch).sum()
    loss.backward()


def frozen_step(model: torch.nn.Module, batch) -> None:
    """Forward+backward with frozen weights: activation gradients only (EAP's minimum work)."""
    embeds = model.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
    loss = target_nll(model(inputs_embeds=embeds).logits, batch).sum()
    loss.backward()


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as handle:
        line = next(l for l in handle if l.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _reset_peak() -> float:
    """Reset the kernel's peak-RSS mark (VmHWM) and return the current resident size in MiB."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status_mib("VmRSS")


if __name__ == "__main__":
    mode, tokens = sys.argv[1], int(sys.argv[2])
    model, batch = smollm2_shaped_model(), smollm2_batch(tokens)
    if mode == "train":
        model.requires_grad_(True)
        train_step(model, batch)   # warm-up: allocator pools and parameter .grad exist before the mark
        before = _reset_peak()
        train_step(model, batch)
    elif mode == "frozen":
        model.requires_grad_(False)
        frozen_step(model, batch)
        before = _reset_peak()
        frozen_step(model, batch)
    else:
        model.requires_grad_(False)
        with InstrumentedModel(model, "paper") as im:
            eap_step(im, batch)
            before = _reset_peak()
            eap_step(im, batch)
    print(f"{_status_mib('VmHWM') - before:.1f}")
