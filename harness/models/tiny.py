"""Tiny trained models of each supported family, for tests that need a real (if small) base/post pair.

Each is 2 layers, hidden 32, with a character-level tokenizer, trained from scratch in seconds on a
few hundred `a+b=c` strings; its "post-trained" variant takes a few reward-weighted policy-gradient
steps (sampled answers, exact-answer reward, group-mean baseline) from the base. Everything is
seeded and deterministic, and cached on disk atomically by a hash of the recipe.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import torch

from harness.circuit import FAMILIES
from harness.errors import UserError
from harness.files import atomic_write_json, cache_root, content_key, temp_dir

RECIPE = {"version": 1, "hidden": 32, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 64, "n_train": 400,
          "pretrain_steps": 150, "pretrain_lr": 3e-3, "post_steps": 8, "post_lr": 1e-3, "samples": 4,
          "max_operand": 20, "seed": 0}
CHARS = list("0123456789+-=\n ")
SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]


def make_tokenizer():
    """Character-level fast tokenizer: one token per character, BOS prepended, no chat template."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + CHARS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


def make_config(family: str, vocab_size: int):
    """A 2-layer config of `family` (grouped-query attention where the family has it)."""
    from transformers import (
        Gemma3TextConfig,
        GPT2Config,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
    )

    r = RECIPE
    common = dict(vocab_size=vocab_size, hidden_size=r["hidden"], intermediate_size=r["ffn"],
                  num_hidden_layers=r["layers"], num_attention_heads=r["heads"], num_key_value_heads=r["kv_heads"],
                  max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                  tie_word_embeddings=True)
    if family == "llama":
        return LlamaConfig(**common, rope_theta=10000.0)
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "mistral":
        return MistralConfig(**common, sliding_window=None)
    if family == "gemma3":
        return Gemma3TextConfig(**common, head_dim=r["hidden"] // r["heads"],
                                layer_types=["sliding_attention", "full_attention"], sliding_window=16)
    if family == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=r["hidden"], n_layer=r["layers"], n_head=r["heads"],
                          n_inner=r["ffn"], n_positions=256, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    raise UserError(f"unknown tiny family {family!r}; choose one of {', '.join(FAMILIES)}")


def arithmetic_problems(n: int, seed: int) -> list[tuple[str, str]]:
    """`n` (prompt, answer) pairs like ("7+12=", "19"), operands 0..max_operand, seeded."""
    rng = random.Random(seed)
    m = RECIPE["max_operand"]
    out = []
    for _ in range(n):
        a, b = rng.randint(0, m), rng.randint(0, m)
        out.append((f"{a}+{b}=", str(a + b)))
    return out


def _batch(tokenizer, texts: list[str]):
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return enc, labels


def _pretrain(model, tokenizer, problems) -> list[float]:
    """Next-token training on "a+b=c<eos>" strings; returns the loss curve."""
    texts = [p + a + tokenizer.eos_token for p, a in problems]
    opt = torch.optim.AdamW(model.parameters(), lr=RECIPE["pretrain_lr"])
    gen = torch.Generator().manual_seed(RECIPE["seed"])
    tokenizer.padding_side = "right"
    losses = []
    for _ in range(RECIPE["pretrain_steps"]):
        idx = torch.randint(len(texts), (32,), generator=gen).tolist()
        enc, labels = _batch(tokenizer, [texts[i] for i in idx])
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _post_train(model, tokenizer, problems) -> list[float]:
    """Reward-weighted policy-gradient steps: sample answers, reward exact ones, baseline = group mean."""
    opt = torch.optim.AdamW(model.parameters(), lr=RECIPE["post_lr"])
    k = RECIPE["samples"]
    rewards = []
    for step in range(RECIPE["post_steps"]):
        chunk = problems[step * 8:(step + 1) * 8]
        prompts = [p for p, _ in chunk for _ in range(k)]
        tokenizer.padding_side = "left"
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
        torch.manual_seed(RECIPE["seed"] + step)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=4, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 pad_token_id=0, eos_token_id=2)
        answers = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        reward = torch.tensor([float(a.strip() == gold) for a, (_, gold) in zip(answers, [c for c in chunk for _ in range(k)])])
        advantage = (reward.view(-1, k) - reward.view(-1, k).mean(1, keepdim=True)).view(-1)
        mask = torch.cat([torch.zeros_like(enc["input_ids"]), (ids[:, enc["input_ids"].shape[1]:] != 0).long()], 1)
        attn = torch.cat([enc["attention_mask"], mask[:, enc["input_ids"].shape[1]:]], 1)
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        seq_logp = (logp * mask[:, 1:]).sum(1)
        loss = -(advantage * seq_logp).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        rewards.append(reward.mean().item())
    return rewards


def _save(model, tokenizer, folder: Path, meta: dict) -> None:
    """Write a model folder atomically (temp folder, then rename)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(folder.parent, f".{folder.name}-")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "tiny_recipe.json", meta)
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "config.json").exists():  # lost a race to another writer: keep theirs
            raise


def tiny_model_folder(family: str, post: bool = False) -> Path:
    """Folder of the tiny `family` base model (or its post-trained variant), built once and cached."""
    if family not in FAMILIES:
        raise UserError(f"unknown tiny family {family!r}; choose one of {', '.join(FAMILIES)}")
    from transformers import AutoModelForCausalLM

    root = cache_root() / "tiny-models" / f"{family}-{content_key(family, RECIPE)}"
    base_dir, post_dir = root / "base", root / "post"
    target = post_dir if post else base_dir
    if (target / "config.json").exists():
        return target
    tokenizer = make_tokenizer()
    problems = arithmetic_problems(RECIPE["n_train"], RECIPE["seed"])
    if not (base_dir / "config.json").exists():
        torch.manual_seed(RECIPE["seed"])
        model = AutoModelForCausalLM.from_config(make_config(family, len(tokenizer)), dtype=torch.float32)
        losses = _pretrain(model.train(), tokenizer, problems)
        _save(model, tokenizer, base_dir, {"family": family, "recipe": RECIPE, "pretrain_loss": losses})
    if post and not (post_dir / "config.json").exists():
        torch.manual_seed(RECIPE["seed"] + 1)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).train()
        rewards = _post_train(model, tokenizer, arithmetic_problems(8 * RECIPE["post_steps"], RECIPE["seed"] + 1))
        _save(model, tokenizer, post_dir, {"family": family, "recipe": RECIPE, "post_reward": rewards,
                                           "algorithm": "reward-weighted"})
    return target
