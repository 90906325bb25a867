"""Problem sets: GSM8K/MATH JSONL files, `datasets` hub ids, and seeded reasoning-gym tasks.

Every set carries a revision (file hash, hub revision, or package version plus config) so that
artefacts built from it can name exactly what they were built from.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from harness.data.latex import last_boxed
from harness.data.worked import reference_solution
from harness.errors import UserError
from harness.files import read_utf8

AnswerStyle = Literal["gsm8k", "math", "reasoning-gym"]

# reasoning-gym tasks offered offline, by preset name, with the configs that give a 135M model a
# non-zero accuracy (see posttrain notes). A preset named other than its task says which task it
# configures under "task". `basic_arithmetic` leaves out "/" because its simple generator prints a
# divisor that differs from the one it computes with.
REASONING_GYM_PRESETS: dict[str, dict[str, Any]] = {
    "gsm_symbolic": {},
    "chain_sum": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
    "basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2,
                         "operators": ["+", "-", "*"], "allow_parentheses": False,
                         "allow_negation": False},
    "products": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
    # the bundled pairs' two tasks (reasoning answers of the SFT checkpoint): two-digit operands;
    # "distinct": no question is drawn twice
    "chain_sum_2d": {"task": "chain_sum", "min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2,
                     "distinct": True},
    "arithmetic_2d": {"task": "basic_arithmetic", "min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 2,
                      "operators": ["+", "-", "*"], "allow_parentheses": False, "allow_negation": False,
                      "distinct": True},
}

DISTINCT_DRAWS = 20   # draws per wanted problem before a distinct preset gives up

# Hub datasets with a known layout: id -> (config name, split).
HUB_DEFAULTS: dict[str, tuple[str | None, str]] = {
    "openai/gsm8k": ("main", "test"),
    "HuggingFaceH4/MATH-500": (None, "test"),
    "EleutherAI/hendrycks_math": ("algebra", "test"),
}


@dataclass(frozen=True)
class Problem:
    """One question with its gold final answer.

    gold: the final answer as a string (GSM8K: the number after ####; MATH: the last \\boxed{}).
    reference: the dataset's full reference solution text, when the dataset has one.
    entry: for reasoning-gym, the task's own item (its scorer reads it); else None.
    """

    id: str
    question: str
    gold: str
    style: AnswerStyle
    reference: str | None = None
    entry: dict | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class ProblemSet:
    """A named, revisioned list of problems."""

    name: str
    revision: str
    problems: tuple[Problem, ...]
    config: dict = field(default_factory=dict, compare=False, hash=False)

    def provenance(self) -> dict:
        return {"dataset": self.name, "revision": self.revision, "n": len(self.problems),
                "config": self.config}


def _gsm8k_gold(answer: str) -> str:
    match = re.search(r"####\s*(.+?)\s*$", str(answer).strip())   # a JSON number is an answer too (g06)
    if not match:
        raise ValueError("GSM8K answer does not end with '#### N'")
    if not re.search(r"\d", match.group(1)):   # '#### abc' is no answer (c02)
        raise ValueError(f"GSM8K answer '#### {match.group(1)}' holds no number")
    return match.group(1)


def _math_gold(solution: str) -> str:

    boxed = last_boxed(solution)
    if boxed is None:
        raise ValueError("MATH solution has no \\boxed{}")
    return boxed


def problem_from_row(row: dict, index: int, where: str) -> Problem:
    """Map a GSM8K row (`question`, `answer`) or MATH row (`problem`, `solution`) to a Problem."""
    pid = str(row.get("id", row.get("unique_id", index)))
    try:
        if "question" in row and "answer" in row:
            return Problem(pid, row["question"], _gsm8k_gold(row["answer"]), "gsm8k",
                           reference=row["answer"])
        if "problem" in row and "solution" in row:
            gold = str(row["answer"]) if row.get("answer") else _math_gold(row["solution"])
            return Problem(pid, row["problem"], gold, "math", reference=row["solution"])
    except ValueError as err:
        raise UserError(f"{where}: {err}; fix the row or drop it") from None
    raise UserError(f"{where}: expected fields question+answer (GSM8K) or problem+solution (MATH), "
                    f"got {sorted(row)}")


def load_jsonl(path: str | Path) -> ProblemSet:
    """Read a GSM8K- or MATH-format JSONL file; the revision is the file's sha256."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"dataset file {path} does not exist")
    data = path.read_bytes()
    problems = []
    for lineno, line in enumerate(read_utf8(path, "dataset file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        problems.append(problem_from_row(row, len(problems), f"{path}:{lineno}"))
    _check_unique_ids(problems, str(path))
    return ProblemSet(name=path.name, revision="sha256:" + hashlib.sha256(data).hexdigest(),
                      problems=tuple(problems), config={"path": str(path)})


def load_hub(dataset_id: str, *, config: str | None = None, split: str | None = None,
             revision: str | None = None, **load_kwargs: Any) -> ProblemSet:
    """Load a `datasets` dataset (hub id, or a builder such as "json" with data_files=...).

    The revision recorded is the one asked for, else the dataset's own fingerprint.
    """
    try:
        import datasets
    except ImportError:
        raise UserError("hub datasets need the `datasets` package: pip install 'datasets>=3'") from None
    default_config, default_split = HUB_DEFAULTS.get(dataset_id, (None, "test"))
    config, split = config or default_config, split or default_split
    try:
        ds = datasets.load_dataset(dataset_id, config, split=split, revision=revision, **load_kwargs)
    except Exception as err:  # the hub client raises many types; all mean "could not load"
        raise UserError(f"could not load dataset {dataset_id!r} (config {config}, split {split}): "
                        f"{type(err).__name__}: {err}. Is the hub reachable? Offline, pass a "
                        "local JSONL file instead") from None
    problems = [problem_from_row(dict(row), i, f"{dataset_id}[{i}]") for i, row in enumerate(ds)]
    _check_unique_ids(problems, dataset_id)
    return ProblemSet(name=dataset_id, revision=revision or f"fingerprint:{ds._fingerprint}",
                      problems=tuple(problems),
                      config={"config": config, "split": split, **{k: str(v) for k, v in load_kwargs.items()}})


@lru_cache(maxsize=None)
def _reasoning_gym_task(task: str):
    """A size-1 instance of the preset's task, used only for its `score_answer`."""
    import reasoning_gym

    name, config = reasoning_gym_config(task)
    config.pop("distinct", None)
    return reasoning_gym.create_dataset(name, seed=0, size=1, **config)


def reasoning_gym_config(preset: str) -> tuple[str, dict[str, Any]]:
    """(reasoning-gym task name, its config) of a preset name; unknown names raise a UserError."""
    if preset not in REASONING_GYM_PRESETS:
        raise UserError(f"unknown reasoning-gym task {preset!r}; choose one of {', '.join(REASONING_GYM_PRESETS)}")
    config = dict(REASONING_GYM_PRESETS[preset])
    return config.pop("task", preset), config


def reasoning_gym_score(task: str, answer: str | None, entry: dict) -> float:
    """The task's own scorer: 1.0 for an exactly right answer."""
    return float(_reasoning_gym_task(task).score_answer(answer, entry))


def _reference(entry: dict) -> str | None:
    """A reasoning-gym item's reference solution: the task's own chain of thought where it writes one,
    else the worked solution of a two-term arithmetic expression (the bundled tasks), else None."""
    metadata = entry.get("metadata") or {}
    if metadata.get("answer_cot"):
        return metadata["answer_cot"]
    expression = metadata.get("expression")
    return reference_solution(expression) if isinstance(expression, str) else None


def load_reasoning_gym(task: str, *, n: int, seed: int, **overrides: Any) -> ProblemSet:
    """n seeded problems of a reasoning-gym task; config = preset updated by overrides."""
    import reasoning_gym

    name, preset = reasoning_gym_config(task)
    if n < 1:
        raise UserError(f"number of problems must be at least 1, got {n}")
    config = {**preset, **overrides}
    distinct = bool(config.pop("distinct", False))
    try:
        ds = reasoning_gym.create_dataset(name, seed=seed, size=DISTINCT_DRAWS * n if distinct else n, **config)
    except (TypeError, AssertionError) as err:
        raise UserError(f"bad config for reasoning-gym task {task}: {err}") from None
    entries, seen = [], set()
    for entry in ds:
        if distinct and entry["question"] in seen:
            continue
        seen.add(entry["question"])
        entries.append(entry)
        if len(entries) == n:
            break
    if len(entries) < n:
        raise UserError(f"reasoning-gym task {task} has fewer than {n} distinct problems ({len(entries)} found "
                        f"in {DISTINCT_DRAWS * n} draws); ask for fewer")
    problems = []
    for i, entry in enumerate(entries):
        problems.append(Problem(id=f"{task}-{seed}-{i}", question=entry["question"],
                                gold=str(entry["answer"]), style="reasoning-gym",
                                reference=_reference(entry),
                                entry={**entry, "task": task}))
    version = importlib.metadata.version("reasoning-gym")
    return ProblemSet(name=f"reasoning-gym/{task}", revision=f"reasoning-gym=={version}",
                      problems=tuple(problems), config={"seed": seed, "n": n, **config,
                                                        **({"distinct": True} if distinct else {})})


# Most problems one run reads: reasoning-gym builds every problem in memory first, so a larger n
# (e.g. 10**12) would hang instead of failing.
MAX_PROBLEMS = 1_000_000


def load_problems(spec: str, *, n: int | None = None, seed: int = 0) -> ProblemSet:
    """Resolve a dataset spec: `rg:<task>`, `hf:<hub id>[:config]`, or a path to a JSONL file.

    n: keep the first n problems, 1 <= n <= MAX_PROBLEMS (reasoning-gym generates exactly n; default 100).
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PROBLEMS):
        raise UserError(f"number of problems must be between 1 and {MAX_PROBLEMS}, got {n!r}")
    if spec.startswith("rg:"):
        return load_reasoning_gym(spec[3:], n=100 if n is None else n, seed=seed)
    if spec.startswith("hf:"):   # hf:<id>[:config][@revision]
        name, _, revision = spec[3:].partition("@")
        dataset_id, _, config = name.partition(":")
        problem_set = load_hub(dataset_id, config=config or None, revision=revision or None)
    elif spec.endswith((".jsonl", ".json")) or Path(spec).exists():
        problem_set = load_jsonl(spec)
    else:
        raise UserError(f"dataset {spec!r} is neither a JSONL file nor rg:<task> nor hf:<hub id>; "
                        f"reasoning-gym tasks: {', '.join(REASONING_GYM_PRESETS)}")
    if n is not None:
        problem_set = ProblemSet(problem_set.name, problem_set.revision, problem_set.problems[:n],
                                 {**problem_set.config, "first_n": n})
    return problem_set


def _check_unique_ids(problems: list[Problem], where: str) -> None:
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise UserError(f"{where}: problem id {p.id!r} occurs twice; ids must be unique")
        seen.add(p.id)


# Short dataset names; anything else must be a dataset spec that `load_problems` accepts
# (rg:<task>, hf:<hub id>, or a JSONL path).
DATASETS: dict[str, str] = {
    "chain_sum": "rg:chain_sum",
    "basic_arithmetic": "rg:basic_arithmetic",
    "products": "rg:products",
    "chain_sum_2d": "rg:chain_sum_2d",
    "arithmetic_2d": "rg:arithmetic_2d",
    "gsm_symbolic": "rg:gsm_symbolic",
    "gsm8k": "hf:openai/gsm8k",
    "math500": "hf:HuggingFaceH4/MATH-500",
}


def dataset_spec(name: str) -> str:
    """The `load_problems` spec of a dataset name; unknown names raise a UserError with the choices."""
    if name in DATASETS:
        return DATASETS[name]
    if name.startswith(("rg:", "hf:")) or name.endswith(".jsonl") or Path(name).is_file():
        return name
    raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, "
                    "or give rg:<reasoning-gym task>, hf:<hub id> or a JSONL file")
