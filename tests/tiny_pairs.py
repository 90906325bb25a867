"""Two tiny trained pairs and a sums dataset they answer, for suite runs that take about a minute.

The tiny base models answer `a+b=` strings, and only the sums they were trained on often enough
for a sample of both-correct questions, so the runs use those sums as a test-only dataset (GSM8K
format). Each "post-trained" model is its base with 1 % multiplicative weight noise (a stand-in with
the base's accuracy). The qwen2 pair is registered as a preference pair so that the DPO claim has
cells: a label for the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.models.tiny import RECIPE, arithmetic_problems, tiny_model_folder

QUESTIONS = 120
PAIRS = (("tiny-rl", "llama", "grpo", "online-rl"), ("tiny-pref", "qwen2", "dpo", "offline-preference"))


def perturbed_copy(source: Path, target: Path, seed: int, scale: float = 0.01) -> Path:
    """`source` with every weight multiplied by 1 + scale·N(0, 1) (seeded), saved to `target`
    (scale 0: an exact copy)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + scale * torch.randn(p.shape, generator=generator))
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


def ship_models(folder: Path) -> None:
    """Each tiny pair's base and post model as `<folder>/<pair>-base` and `<pair>-post` (the golden
    run's shipped models: trained here once, read everywhere)."""
    import shutil

    for seed, (name, family, _, _) in enumerate(PAIRS):
        shutil.rmtree(folder / f"{name}-base", ignore_errors=True)
        shutil.copytree(tiny_model_folder(family), folder / f"{name}-base")
        perturbed_copy(tiny_model_folder(family), folder / f"{name}-post", seed)


def write_registry(path: Path, models: str | None = None) -> None:
    """A registry with the two tiny pairs: their models from `models` (ship_models's folder), else the
    cache's tiny models with post models written beside the registry."""
    entries = []
    for seed, (name, family, algorithm, kind) in enumerate(PAIRS):
        if models is None:
            base = tiny_model_folder(family).resolve()
            post = perturbed_copy(base, path.parent / f"{name}-post", seed)
        else:
            base, post = Path(models) / f"{name}-base", Path(models) / f"{name}-post"
        entries.append(f'''[[pair]]
name = "{name}"
family = "{family}"
base = "{base}"
post = "{post}"
algorithm = "{algorithm}"
algorithm_kind = "{kind}"
prompt_template = "bare"
max_new_tokens = 4
datasets = ["sums.jsonl"]
bundled = true
''')
    path.write_text("\n".join(entries))


def write_dataset(path: Path, questions: int = QUESTIONS) -> None:
    """The first `questions` training sums as GSM8K-style JSONL rows."""
    rows = arithmetic_problems(RECIPE["n_train"], RECIPE["seed"])[:questions]
    path.write_text("".join(json.dumps({"id": f"s{i}", "question": q, "answer": f"#### {a}"}) + "\n"
                            for i, (q, a) in enumerate(rows)))


def function_identical_copy(source: Path, target: Path, seed: int = 0) -> Path:
    """A Llama model that computes `source`'s function with every weight changed, saved to `target`.

    The residual dimensions are permuted (embedding, every reading and writing matrix, every norm);
    each norm's weight is scaled and the matrices it feeds divided by the same factor; queries are
    scaled by s and keys by 1/s, values by t and the output projection by 1/t; the MLP's hidden units
    are permuted. Only float rounding differs, so its EAP scores equal the base's to ~1e-6 relative.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    hidden = model.config.hidden_size
    perm = torch.randperm(hidden, generator=generator)
    m = model.model
    with torch.no_grad():
        lm_head = m.embed_tokens.weight[:, perm].clone()
        m.embed_tokens.weight.copy_(m.embed_tokens.weight[:, perm])
        for layer in m.layers:
            attn, mlp = layer.self_attn, layer.mlp
            r_attn, r_mlp, s, t = 1.7, 0.6, 1.3, 0.8
            layer.input_layernorm.weight.copy_(layer.input_layernorm.weight[perm] * r_attn)
            attn.q_proj.weight.copy_(attn.q_proj.weight[:, perm] * s / r_attn)
            attn.k_proj.weight.copy_(attn.k_proj.weight[:, perm] / (s * r_attn))
            attn.v_proj.weight.copy_(attn.v_proj.weight[:, perm] * t / r_attn)
            attn.o_proj.weight.copy_(attn.o_proj.weight[perm, :] / t)
            units = torch.randperm(mlp.gate_proj.weight.shape[0], generator=generator)
            layer.post_attention_layernorm.weight.copy_(layer.post_attention_layernorm.weight[perm] * r_mlp)
            mlp.gate_proj.weight.copy_(mlp.gate_proj.weight[units][:, perm] / r_mlp)
            mlp.up_proj.weight.copy_(mlp.up_proj.weight[units][:, perm] / r_mlp)
            mlp.down_proj.weight.copy_(mlp.down_proj.weight[:, units][perm, :])
        r_final = 1.4
        m.norm.weight.copy_(m.norm.weight[perm] * r_final)
    model.config.tie_word_embeddings = False
    model.lm_head = torch.nn.Linear(hidden, model.config.vocab_size, bias=False)
    with torch.no_grad():
        model.lm_head.weight.copy_(lm_head / r_final)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


def _import_model_io() -> None:
    """Build, load and save a tiny model once, at import: the modules torch and transformers import
    lazily for that are then loaded before any test runs. pytester unloads the modules first imported
    during a test, and torch cannot register their operators a second time."""
    import tempfile

    from harness.models.tiny import tiny_model_folder

    with tempfile.TemporaryDirectory() as folder:
        function_identical_copy(tiny_model_folder("llama"), Path(folder) / "warm")


_import_model_io()
