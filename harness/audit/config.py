"""The audit's one frozen configuration: budget and method choices of a run, recorded in every cell."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from harness.data.grading import GRADER_SETTINGS
from harness.data.selection import SHORT_ANSWERS, TOKEN_MODES, VARIANTS
from harness.errors import UserError


@dataclass(frozen=True)
class AuditConfig:
    """Budget and method choices of an audit run; `as_dict()` goes into every cell's provenance.

    questions: problems drawn per dataset (both models answer all of them).
    n_select: questions kept at most after selection (the paper: 100).
    max_new_tokens: answer budget; None uses the pair's registry value.
    fidelity_samples / fidelity_edges: questions and sampled edges per model in the fidelity check;
    a cell is INVALID when a model's EAP-vs-ablation Spearman is below fidelity_threshold.
    grader: how answers are graded (harness.data.grading): auto (paper for GSM8K/MATH, the task's
    own scorer for reasoning-gym), paper or lenient.
    short_answers: a kept answer shorter than T_cut is sliced (all its tokens are targets; the
    paper's code), dropped, or an error (harness.data.selection).
    """

    questions: int = 100
    n_select: int = 100
    variant: str = "paper-code"
    beta: float = 0.5
    gamma: float = 1.5
    delta: float = 0.5
    selection_seed: int = 42
    data_seed: int = 0
    max_new_tokens: int | None = None
    generation_batch_size: int = 8
    eap_batch_size: int = 1
    layout: str = "paper"
    positions: str = "all"
    device: str = "cpu"
    dtype: str = "float32"
    fidelity_samples: int = 2
    fidelity_edges: int = 32
    fidelity_threshold: float = 0.5
    seed: int = 0
    grader: str = "auto"
    short_answers: str = "slice"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise UserError(f"unknown selection variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.grader not in GRADER_SETTINGS:
            raise UserError(f"unknown grader {self.grader!r}; choose one of {', '.join(GRADER_SETTINGS)}")
        if self.short_answers not in SHORT_ANSWERS:
            raise UserError(f"unknown short_answers policy {self.short_answers!r}; choose one of "
                            f"{', '.join(SHORT_ANSWERS)}")
        for name in ("questions", "n_select", "generation_batch_size", "eap_batch_size",
                     "fidelity_samples", "fidelity_edges"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not -1 <= self.fidelity_threshold <= 1:
            raise UserError(f"fidelity threshold is a Spearman correlation in [-1, 1], got {self.fidelity_threshold}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def validate_alpha(alpha: float) -> float:
    if not 0 < alpha <= 1:
        raise UserError(f"alpha must be in (0, 1], got {alpha}")
    return float(alpha)


def validate_token_mode(mode: str) -> str:
    if mode not in TOKEN_MODES:
        raise UserError(f"unknown token mode {mode!r}; choose one of {', '.join(TOKEN_MODES)}")
    return mode
