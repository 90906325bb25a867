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
    sesoi_rel, sesoi_complexity, sesoi_kurtosis: smallest effects of interest, relative changes
      (effect / |base value|): sesoi_complexity for Information Complexity, sesoi_kurtosis for
      Distribution Kurtosis, sesoi_rel for Activation Intensity and every metric without its own
      (`sesoi_for`). A verdict needs its interval beyond the metric's margin; an interval inside it is
      "no meaningful change". Each default is about half the smallest change the paper reports for that
      metric under online RL (`SESOI_JUSTIFICATION`, printed in the rules).
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
    sesoi_complexity: float = 0.20
    sesoi_kurtosis: float = 0.10
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
        for name in ("sesoi_rel", "sesoi_complexity", "sesoi_kurtosis", "sesoi_accuracy", "tie_rel_tol", "claimed_rate_tolerance"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"stats.{name} must lie in [0, 1), got {getattr(self, name)!r}")
        for name, least in (("n_boot", 10), ("n_perm", 1), ("n_perm_pooled", 1), ("min_n", 1), ("seed", 0)):
            if getattr(self, name) < least:   # a bootstrap interval needs 10 resamples (circuit/fidelity.py)
                raise UserError(f"stats.{name} must be at least {least}, got {getattr(self, name)!r}")
        if self.zero_method not in ("wilcox", "pratt"):
            raise UserError(f"stats.zero_method must be wilcox or pratt, got {self.zero_method!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sesoi_for(self, metric: str) -> float:
        """The smallest effect of interest of a metric, a relative change."""
        return getattr(self, SESOI_SETTING.get(metric, "sesoi_rel"))

    def sesoi_text(self, metric: str) -> str:
        """The metric's margin with the reason for its default, as the rules print it."""
        name = SESOI_SETTING.get(metric, "sesoi_rel")
        value, default = getattr(self, name), StatsConfig.__dataclass_fields__[name].default
        why = SESOI_JUSTIFICATION.get(metric, SESOI_JUSTIFICATION["intensity"] + "; the paper reports no per-"
                                      "experiment change of this metric, so it takes intensity's margin")
        own = f"{value:g} relative (stats.{name}" + (f"; default {default:g}" if value != default else "")
        return f"{own}; the default: {why})"


# the setting that holds each metric's smallest effect of interest (the rest use stats.sesoi_rel)
SESOI_SETTING = {"complexity": "sesoi_complexity", "kurtosis": "sesoi_kurtosis"}
# why each default: the paper's Table 1, SFT -> post (online RL: DeepSeek-Math GRPO, Mistral PPO, Distilled-Qwen
# GRPO; offline DPO: Qwen2.5), about half the smallest online-RL change, rounded down
SESOI_JUSTIFICATION = {
    "intensity": "about half the smallest online-RL rise the paper reports for Activation Intensity (Mistral +9.6 %, "
                 "Table 1), and above the DPO change it calls no rise (-1.5 %)",
    "complexity": "about half the smallest online-RL rise the paper reports for Information Complexity (DeepSeek-Math "
                  "+43.6 %; Mistral +592 %, Distilled-Qwen +65 %, DPO -19.1 %; Table 1)",
    "kurtosis": "about half the smallest online-RL fall the paper reports for Distribution Kurtosis (Mistral -20.9 %; "
                "DeepSeek-Math -37.5 %, Distilled-Qwen -26.9 %, DPO -13.3 %; Table 1)",
}
