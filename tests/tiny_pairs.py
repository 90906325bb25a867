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


def write_registry(path: Path) -> None:
    """A registry with the two tiny pairs; post models are written beside it."""
    entries = []
    for seed, (name, family, algorithm, kind) in enumerate(PAIRS):
        post = perturbed_copy(tiny_model_folder(family), path.parent / f"{name}-post", seed)
        entries.append(f'''[[pair]]
name = "{name}"
family = "{family}"
base = "{tiny_model_folder(family)}"
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
