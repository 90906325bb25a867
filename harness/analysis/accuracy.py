"""Accuracy of a model pair on one dataset (the paper's Table 4), with uncertainty.

Each model's accuracy gets a Wilson 95% interval (statsmodels); the paired outcomes (same questions)
get an exact McNemar test on the discordant pairs (statsmodels two-sided, scipy binomtest one-sided).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from scipy.stats import binomtest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

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
    low, high = proportion_confint(correct, n, alpha=1 - confidence, method="wilson")
    return max(0.0, float(low)), min(1.0, float(high))


MCNEMAR_ALTERNATIVES = ("two-sided", "greater", "less")


def mcnemar_exact(fixed: int, broken: int, alternative: str = "two-sided") -> float:
    """Exact McNemar p-value: binomial test of the discordant counts against 1/2.

    alternative: 'two-sided'; 'greater' = post fixes more questions than it breaks; 'less' = it
    breaks more. No discordant question is no evidence either way: p = 1.
    """
    if alternative not in MCNEMAR_ALTERNATIVES:
        raise UserError(f"McNemar alternative must be one of {MCNEMAR_ALTERNATIVES}, got {alternative!r}")
    if fixed < 0 or broken < 0:
        raise UserError(f"discordant counts must be >= 0, got fixed={fixed}, broken={broken}")
    if fixed + broken == 0:
        return 1.0
    if alternative == "two-sided":
        return float(mcnemar([[0, broken], [fixed, 0]], exact=True).pvalue)
    return float(binomtest(fixed, fixed + broken, 0.5, alternative=alternative).pvalue)


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
