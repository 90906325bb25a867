"""What every claim's family rule shares: the grid cell a test stands for, the fidelity it carries, the
family record written into each cell, and the smallest effect of interest of a cell. Metric and
statistics settings come from the run's one configuration (`audit.config.metrics`, `.stats`).

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
from harness.analysis.stats.resampling import ties_within_precision
from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.stages import AuditPipeline, CellData
from harness.audit.verdicts import CORRECTION, CellResult, Decision, Margin, Verdict, make_cell_id, verdict_rule
from harness.data.selection import SelectionError
from harness.files import content_key


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
    min_p: float | None = None   # the smallest one-sided p the test's design can give


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


def metric_diffs(cell: CellData, metric: str, metrics: MetricConfig, stats: StatsConfig) -> np.ndarray:
    """Per-question post - base of a metric, [n] float64, ties (stats.tie_rel_tol) set to 0."""
    values = per_sample_values(metric, *edge_arrays(cell), metrics)
    post, _ = ties_within_precision(values.base, values.post, stats.tie_rel_tol)
    return np.asarray(post - values.base, dtype=float)


def relative_margin(effect: float, ci_low: float, ci_high: float, base_value: float, direction: int,
                    stats: StatsConfig) -> Margin:
    """The smallest effect of interest of a cell: stats.sesoi_rel of |base value|, in the effect's units."""
    size = stats.sesoi_rel * abs(base_value)
    return Margin(effect, ci_low, ci_high, direction, size, f"{stats.sesoi_rel:g} x |base| = {size:.3g}")


FIDELITY_FIELDS = ("spearman", "ci", "status", "n_questions", "n_edges", "sampling", "threshold", "by_destination")


def cell_fidelity(cells: list[CellData]) -> dict | None:
    """The fidelity a cell carries beside its verdict: the record of the least faithful model among
    the cells it reads (lowest Spearman; NaN first), where and on which model it was measured, and a
    summary of every model's record in `by_model`. None when nothing was measured."""
    records = {f"{c.pair.name}/{side}": (c, rec) for c in cells for side, rec in c.fidelity.items()}
    if not records:
        return None

    def rank(item: tuple[str, tuple]) -> float:
        value = item[1][1].get("spearman")
        return -math.inf if value is None or not np.isfinite(value) else float(value)

    model, (cell, worst) = min(records.items(), key=rank)
    return {**{k: worst.get(k) for k in FIDELITY_FIELDS}, "model": model, "measured_at": cell.measured_at,
            "by_model": {k: {"spearman": r.get("spearman"), "ci": r.get("ci"), "status": r.get("status")}
                         for k, (_, r) in records.items()}}


def fidelity_extra(cells: list[CellData]) -> dict:
    """Every fidelity record the cell reads, by pair / measured alpha / model (points for the scatter)."""
    return {f"{c.pair.name}/a{c.measured_at}/{side}": rec for c in cells for side, rec in c.fidelity.items()}


def metric_rule(stats: StatsConfig, metrics: MetricConfig, decided_on: str) -> str:
    """The rule text of a metric claim cell, with every setting that can change its verdict."""
    return (f"{verdict_rule(stats.alpha, stats.min_n, f'{stats.ci_level:.0%} interval of the tested effect')}. "
            f"Tested effect: {decided_on}. Smallest effect of interest: {stats.sesoi_rel:g} x |base value|. "
            f"Ties: a difference within {stats.tie_rel_tol:g} x max(|base|, |post|) counts as zero. Metric "
            f"settings: range {metrics.range_policy.value}, {metrics.bins} bins, eps {metrics.eps:g}, structural "
            f"zeros {'included' if metrics.include_structural_zeros else 'excluded'}")


def family_extra(cells: list[GridCell], claim_id: str, decision: Decision, stats: StatsConfig) -> dict:
    """What a cell was corrected with: the family fixed by the grid, its hash, and Holm's m; whether the
    interval lay inside the smallest effect of interest, and whether the grid could reach a verdict."""
    ids = [cell_id(claim_id, g) for g in cells]
    return {"family_size": len(cells), "family": ids, "family_hash": content_key(ids),
            "holm_m": decision.holm_m, "p_holm_opposite": finite(decision.p_adjusted_opposite),
            "correction": f"{CORRECTION} (BH reported)", "equivalent": decision.equivalent,
            "reachable": decision.reachable, "stats_config": stats.as_dict()}


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
                      rule or verdict_rule(audit.config.stats.alpha, audit.config.stats.min_n), reason, g.pair, g.dataset, g.alpha,
                      g.metric, g.token_mode, funnel=funnel or [], provenance={"audit_config": audit.config.as_dict()})


def try_cell(audit: AuditPipeline, pair: str, dataset: str, alpha: float, mode: str) -> CellData | SelectionError:
    try:
        return audit.cell(pair, dataset, alpha, mode)
    except SelectionError as err:
        return err


def funnel_of(err: SelectionError) -> list[dict]:
    return [{"stage": s.step, "n": s.count, "rule": s.rule} for s in err.funnel]
