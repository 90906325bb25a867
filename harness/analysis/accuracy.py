"""Accuracy of a model pair on one dataset (the paper's Table 4), with uncertainty.

Each model's accuracy gets a Wilson 95% interval; the paired outcomes (same questions) get an
exact two-sided McNemar test on the discordant pairs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

from scipy.stats import binom, norm

from harness.data.grading import Check, CheckedGeneration
from harness.errors import UserError


@dataclass(frozen=True)
class ModelAccuracy:
    """correct out of n; accuracy and its Wilson interval as fractions in [0, 1]."""

    correct: int
    n: int
    accuracy: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class AccuracyTable:
    """fixed: base wrong, post right. broken: base right, post wrong. mcnemar_p: exact, two-sided."""

    pair: str
    dataset: str
    n: int
    base: ModelAccuracy
    post: ModelAccuracy
    fixed: int
    broken: int
    mcnemar_p: float
    confidence: float

    def to_json(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        pct = int(round(self.confidence * 100))
        rows = [f"| pair | dataset | n | base acc [{pct}% CI] | post acc [{pct}% CI] | fixed | broken | McNemar p |",
                "|---|---|---|---|---|---|---|---|"]
        cell = lambda m: f"{m.accuracy:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]"  # noqa: E731
        rows.append(f"| {self.pair} | {self.dataset} | {self.n} | {cell(self.base)} | "
                    f"{cell(self.post)} | {self.fixed} | {self.broken} | {self.mcnemar_p:.3g} |")
        return "\n".join(rows)


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n <= 0 or not 0 <= correct <= n:
        raise UserError(f"need 0 <= correct <= n and n > 0, got correct={correct}, n={n}")
    z = norm.ppf(0.5 + confidence / 2)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Exact two-sided McNemar p-value: binomial test of the discordant counts against 1/2."""
    discordant = fixed + broken
    if discordant == 0:
        return 1.0
    return float(min(1.0, 2 * binom.cdf(min(fixed, broken), discordant, 0.5)))


def _checks(items: Sequence[Check | CheckedGeneration]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for item in items:
        check = item.check if isinstance(item, CheckedGeneration) else item
        out[check.problem_id] = check.correct
    return out


def accuracy_table(base: Sequence[Check | CheckedGeneration], post: Sequence[Check | CheckedGeneration],
                   *, pair: str = "", dataset: str = "", confidence: float = 0.95) -> AccuracyTable:
    """Pair the two models' checks by question id and summarise them."""
    b, p = _checks(base), _checks(post)
    if not b or b.keys() != p.keys():
        only = sorted(b.keys() ^ p.keys())[:3]
        raise UserError(f"accuracy needs both models checked on the same non-empty question set; "
                        f"{len(b)} vs {len(p)} questions, differing ids e.g. {only}")
    ids = sorted(b)
    n = len(ids)

    def summary(outcomes: dict[str, bool]) -> ModelAccuracy:
        k = sum(outcomes[i] for i in ids)
        return ModelAccuracy(k, n, k / n, *wilson_interval(k, n, confidence))

    fixed = sum(not b[i] and p[i] for i in ids)
    broken = sum(b[i] and not p[i] for i in ids)
    return AccuracyTable(pair=pair, dataset=dataset, n=n, base=summary(b), post=summary(p),
                         fixed=fixed, broken=broken, mcnemar_p=mcnemar_exact(fixed, broken),
                         confidence=confidence)
