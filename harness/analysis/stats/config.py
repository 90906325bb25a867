"""Decision parameters of the statistics, fixed before the data is seen."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from harness.errors import UserError


@dataclass(frozen=True)
class StatsConfig:
    """Decision parameters fixed before the data is seen; recorded with every verdict.

    significance: family-wise significance level of every one-sided test (Holm). ci_level: level of
      every reported interval. equivalence_level: level of each one-sided test of an equivalence
      (TOST: a 1 - 2 x equivalence_level interval inside the margin). Neither is the paper's alpha,
      the truncation fraction of the answer.
    sesoi_rel: smallest effect of interest, a relative change (effect / |base value|). A verdict
      needs its interval beyond it; an interval inside +-sesoi_rel is "no meaningful change". The
      default 5 % lies between the change the paper calls no change (DPO intensity, -1.5 %) and the
      smallest change it calls a rise (Mistral intensity, +9.6 %; Table 1).
    sesoi_accuracy: the same for C9, in accuracy points (0.02 = two points).
    tie_rel_tol: a per-question (or pooled) difference within tie_rel_tol * max(|base|, |post|) is a
      tie, i.e. zero: below it a difference is float32 rounding, not an effect (a function-identical
      model with other weights differs by ~1e-6 relative in these metrics). An audit in a half-precision
      dtype raises it to that dtype's rounding (audit.config.TIE_FLOOR: 1e-3 float16, 1e-2 bfloat16).
    claimed_rate: the share of experiments C6 claims (the paper: 95 %). claimed_rate_tolerance: how far
      below it the lower bound of the share's interval may lie for SUPPORTED (0.05: at least 90 %).
    n_boot / n_perm / n_perm_pooled: bootstrap resamples, sign-flip permutations, swap permutations
      of pooled metrics. zero_method: Wilcoxon's handling of zero differences (secondary test).
    min_n: fewest questions a cell is judged on.
    """

    significance: float = 0.05
    ci_level: float = 0.95
    equivalence_level: float = 0.05
    sesoi_rel: float = 0.05
    sesoi_accuracy: float = 0.02
    tie_rel_tol: float = 1e-4
    claimed_rate: float = 0.95
    claimed_rate_tolerance: float = 0.05
    n_boot: int = 1000
    n_perm: int = 10000
    n_perm_pooled: int = 2000
    zero_method: str = "wilcox"
    min_n: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("significance", "ci_level", "claimed_rate"):
            if not 0 < getattr(self, name) < 1:
                raise UserError(f"stats.{name} must lie in (0, 1), got {getattr(self, name)!r}")
        if not 0 < self.equivalence_level < 0.5:
            raise UserError(f"stats.equivalence_level must lie in (0, 0.5), got {self.equivalence_level!r}")
        for name in ("sesoi_rel", "sesoi_accuracy", "tie_rel_tol", "claimed_rate_tolerance"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"stats.{name} must lie in [0, 1), got {getattr(self, name)!r}")
        for name, least in (("n_boot", 10), ("n_perm", 1), ("n_perm_pooled", 1), ("min_n", 1), ("seed", 0)):
            if getattr(self, name) < least:   # a bootstrap interval needs 10 resamples (circuit/fidelity.py)
                raise UserError(f"stats.{name} must be at least {least}, got {getattr(self, name)!r}")
        if self.zero_method not in ("wilcox", "pratt"):
            raise UserError(f"stats.zero_method must be wilcox or pratt, got {self.zero_method!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
