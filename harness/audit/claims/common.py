"""What every claim's family rule shares: the grid cell a test stands for, the fidelity gate, the
family record written into each cell, and the fixed statistics settings.

A family is every cell of the claim on the run's grid (harness.audit.grid), whatever -k selects; its
members, hash and Holm's m are recorded in every cell's `extra`, so a report says what Holm corrected for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from harness.analysis.metrics import MetricConfig, per_sample_values
from harness.analysis.stats.config import StatsConfig
from harness.analysis.stats.multiplicity import benjamini_hochberg
from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.stages import AuditPipeline, CellData
from harness.audit.verdicts import CORRECTION, CellResult, Decision, Verdict, make_cell_id, verdict_rule
from harness.data.selection import SelectionError
from harness.files import content_key

METRIC_CONFIG = MetricConfig()
STATS = StatsConfig(n_boot=1000, n_perm=2000, n_perm_pooled=500, seed=0)


class GridCell(NamedTuple):
    """One parametrised test's grid values (None where the claim has no such axis)."""

    pair: str | None = None
    dataset: str | None = None
    alpha: float | None = None
    metric: str | None = None
    token_mode: str | None = None


@dataclass(frozen=True)
class FamilyTest:
    """The few fields `family_verdicts` reads, for tests that are not a paired/pooled test."""

    n: int
    p_claimed: float
    p_opposite: float
    invalid_reason: str | None = None
    no_change: bool = False


@dataclass(frozen=True)
class Gate:
    """Fidelity gate over the cells a verdict reads: passes, the smallest Spearman, and why not."""

    ok: bool = True
    worst: float | None = None
    note: str = ""


@dataclass(frozen=True)
class FamilyContext:
    """What a family rule reads beyond its own cells, fixed by the run's grid.

    rl_pairs: the grid's online-RL pairs (C4 compares with them); alphas: the grid's alpha levels
    (C5); experiments: (online-RL pair, dataset, alpha) triples that C6 counts.
    """

    rl_pairs: tuple[str, ...] = ()
    alphas: tuple[float, ...] = ()
    experiments: tuple[tuple[str, str, float], ...] = ()


def cell_id(claim_id: str, g: GridCell) -> str:
    mode = g.token_mode if g.token_mode not in (None, "own") else None
    return make_cell_id(claim_id, CLAIMS_BY_ID[claim_id].name, g.pair, g.dataset, g.metric, mode, alpha=g.alpha)


def edge_arrays(cell: CellData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W_base, W_post, mask) of a cell as arrays: [n, n_src, n_dst] float32 twice, [n_src, n_dst] bool."""
    return cell.base.scores.numpy(), cell.post.scores.numpy(), cell.base.mask.numpy()


def metric_diffs(cell: CellData, metric: str) -> np.ndarray:
    """Per-question post - base of a metric, [n] float64."""
    values = per_sample_values(metric, *edge_arrays(cell), METRIC_CONFIG)
    return np.asarray(values.post - values.base, dtype=float)


def gate(audit: AuditPipeline, cells: list[CellData]) -> Gate:
    threshold = audit.config.fidelity_threshold
    worst = min(float(r["spearman"]) for c in cells for r in c.fidelity.values())
    if not worst >= threshold:  # NaN fails too
        return Gate(False, worst, f"EAP-vs-ablation Spearman {worst:.3g} < threshold {threshold}")
    return Gate(True, worst, "")


def fidelity_extra(cells: list[CellData]) -> dict:
    return {f"{c.pair.name}/a{c.alpha}/{side}": rec for c in cells for side, rec in c.fidelity.items()}


def family_extra(cells: list[GridCell], claim_id: str, decision: Decision) -> dict:
    """What a cell was corrected with: the family fixed by the grid, its hash, and Holm's m."""
    ids = [cell_id(claim_id, g) for g in cells]
    return {"family_size": len(cells), "family": ids, "family_hash": content_key(ids),
            "holm_m": decision.holm_m, "p_holm_opposite": finite(decision.p_adjusted_opposite), "correction": f"{CORRECTION} (BH reported)", "stats_config": STATS.as_dict()}


def bh_adjusted(tests: list, decisions: list[Decision]) -> np.ndarray:
    """Benjamini-Hochberg p of each test, over the tests whose cell is not INVALID."""
    return benjamini_hochberg([t.p_claimed if d.label is not Verdict.INVALID else math.nan
                               for t, d in zip(tests, decisions)])


def finite(x: Any) -> float | None:
    """A float, or None for a missing, NaN or infinite value."""
    return None if x is None or not np.isfinite(x) else float(x)


def invalid_cell(audit: AuditPipeline, claim_id: str, g: GridCell, reason: str, funnel: list | None = None,
                 rule: str | None = None) -> CellResult:
    claim = CLAIMS_BY_ID[claim_id]
    return CellResult(claim_id, claim.name, cell_id(claim_id, g), Verdict.INVALID,
                      rule or verdict_rule(STATS.alpha, STATS.min_n), reason, g.pair, g.dataset, g.alpha,
                      g.metric, g.token_mode, fidelity_threshold=audit.config.fidelity_threshold,
                      funnel=funnel or [], provenance={"audit_config": audit.config.as_dict()})


def try_cell(audit: AuditPipeline, pair: str, dataset: str, alpha: float, mode: str) -> CellData | SelectionError:
    try:
        return audit.cell(pair, dataset, alpha, mode)
    except SelectionError as err:
        return err


def funnel_of(err: SelectionError) -> list[dict]:
    return [{"stage": s.step, "n": s.count, "rule": s.rule} for s in err.funnel]
