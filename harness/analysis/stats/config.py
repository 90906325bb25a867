"""Decision parameters of the statistics, fixed before the data is seen."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DEPENDENCE_CAVEAT = (
    "cells share models, questions and alpha levels, so they are not independent trials; "
    "the p-value and interval treat them as independent and are therefore optimistic"
)


@dataclass(frozen=True)
class StatsConfig:
    """Decision parameters fixed before the data is seen; recorded with every verdict."""

    alpha: float = 0.05
    ci_level: float = 0.95
    n_boot: int = 2000
    n_perm: int = 10000
    n_perm_pooled: int = 2000
    zero_method: str = "wilcox"
    min_n: int = 10
    equivalence_margin_rel: float = 0.05
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


