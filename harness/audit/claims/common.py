"""What the claim rules share: the grid cell a test stands for, the test record of a cell that is
not a paired or pooled test, the fidelity a cell carries, and the smallest effect of interest of a
cell. Rules read records only (harness.audit.records); the family judge (harness.audit.claims.family)
decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from harness.analysis.confidence import loss_link
from harness.analysis.metrics import MetricConfig
from harness.analysis.stats.config import StatsConfig
from harness.audit.claims import ClaimSpec
from harness.audit.records import CellData, funnel_rows
from harness.audit.verdicts import Margin, make_cell_id, verdict_rule
from harness.circuit.fidelity import difference_fidelity
from harness.data.selection import SelectionError


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


def cell_id(claim: ClaimSpec, g: GridCell) -> str:
    """The cell's id, e.g. C1-intensity-smollm2_grpo-arithmetic_2d-a003 (the token mode when not own)."""
    mode = g.token_mode if g.token_mode not in (None, "own") else None
    return make_cell_id(claim.id, claim.name, g.pair, g.dataset, g.metric, mode, alpha=g.alpha)


def edge_arrays(cell: CellData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W_base, W_post, mask) of a cell as arrays: [n, n_src, n_dst] float32 twice, [n_src, n_dst] bool."""
    return cell.base.scores.numpy(), cell.post.scores.numpy(), cell.base.mask.numpy()


def relative_margin(effect: float, ci_low: float, ci_high: float, base_value: float, direction: int,
                    stats: StatsConfig, metric: str | None = None) -> Margin:
    """The smallest effect of interest of a cell: the metric's relative margin (StatsConfig.sesoi_for;
    stats.sesoi_rel for a metric this package does not define) of |base value|, in the effect's units."""
    rel = stats.sesoi_for(metric) if metric else stats.sesoi_rel
    size = rel * abs(base_value)
    return Margin(effect, ci_low, ci_high, direction, size, f"{rel:g} x |base| = {size:.3g}")


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


def metric_rule(stats: StatsConfig, metrics: MetricConfig, metric: str, decided_on: str, template_limit: float) -> str:
    """The rule text of a metric claim cell, with every setting that can change its verdict."""
    return (f"{verdict_rule(stats.significance, stats.min_n, f'{stats.ci_level:.0%} interval of the tested effect')}. "
            f"Tested effect: {decided_on}. Smallest effect of interest: |base value| times the metric's margin, "
            f"{stats.sesoi_text(metric)}. "
            f"No directional verdict (INVALID, 'the targets are the answer's template') where more than "
            f"{template_limit:.0%} (template_limit) of a model's target tokens are answer template or prompt copies "
            f"(harness.data.span). "
            f"Ties: a difference within {stats.tie_rel_tol:g} x max(|base|, |post|) counts as zero. Metric "
            f"settings: range {metrics.range_policy.value}, {metrics.bins} bins, eps {metrics.eps:g}, structural "
            f"zeros {'included' if metrics.include_structural_zeros else 'excluded'}")


def span_of(cell: CellData) -> dict:
    """The cell's span profile per model (harness.data.span), with its T_cut and where spans start."""
    s = cell.selection
    return {**s.span_profile(cell.token_mode), "t_cut": s.t_cut, "span_start": s.params.span_start}


def behaviour_of(cell: CellData) -> dict:
    """Did behaviour change on the questions the cell analyses? The share whose base and post answers are
    token-identical, and the share whose correctness differs between the models (0 when the selection
    keeps only questions both answer right): a circuit change on identical answers is not a change of
    what the model does."""
    s = cell.selection
    pairs = list(zip(getattr(s, "base", ()), getattr(s, "post", ())))   # a plain record may carry no answers
    if not pairs:
        return {"n": 0, "identical_answers": None, "correctness_changed": None}
    same = sum(tuple(b.generation.answer_ids) == tuple(q.generation.answer_ids) for b, q in pairs)
    changed = sum(getattr(b, "correct", True) != getattr(q, "correct", True) for b, q in pairs)
    return {"n": len(pairs), "identical_answers": same / len(pairs), "correctness_changed": changed / len(pairs),
            "questions": getattr(s.params, "questions", "both-correct")}


def template_reason(span: dict, limit: float) -> str | None:
    """Why a cell gets no directional verdict: a model whose targets are mostly template or prompt copies."""
    worst = max(("base", "post"), key=lambda side: span[side]["template_or_copy_share"])
    share = span[worst]["template_or_copy_share"]
    if share <= limit:
        return None
    return (f"the targets are the answer's template: {share:.0%} of the {worst} model's target tokens are template "
            f"or prompt copies (template_limit {limit:.0%}; T_cut {span['t_cut']}, span from the "
            f"{'answer' if span['span_start'] == 'answer' else 'end of the opening'}, "
            f"{span[worst]['computational_mean']:.1f} computational tokens per question)")


def loss_of(cell: CellData, stats: StatsConfig) -> dict | None:
    """Each model's clean loss on its targets, the change, and its link with Δlog intensity (None when
    the scores carry no loss)."""
    base_loss, post_loss = getattr(cell.base, "loss", None), getattr(cell.post, "loss", None)
    if base_loss is None or post_loss is None:
        return None
    base, post, mask = edge_arrays(cell)
    return loss_link(base, post, mask, base_loss.numpy(), post_loss.numpy(), n_boot=stats.n_boot, seed=stats.seed,
                     ci_level=stats.ci_level)


def change_fidelity(cell: CellData, config) -> dict | None:
    """Difference fidelity of a cell (harness.circuit.fidelity.difference_fidelity): EAP's change post -
    base per edge against exact ablation's, on the questions and edges both models' fidelity records
    share. None when either model has no exact deltas at this alpha."""
    records = [cell.fidelity.get(side, {}) for side in ("base", "post")]
    if not all("deltas" in r for r in records):
        return None
    base, post = records
    if base["edges"] != post["edges"]:
        return {"status": None, "reason": "the two models' fidelity records ablated different edges"}
    in_post = set(post["ids"])
    shared = [q for q in base["ids"] if q in in_post]
    edges = np.array(base["edges"])
    position = {q: i for i, q in enumerate(cell.selection.ids)}
    arrays = []
    for scores, record in ((cell.base, base), (cell.post, post)):
        rows = {q: i for i, q in enumerate(record["ids"])}
        eap = scores.scores.numpy()[[position[q] for q in shared]][:, edges[:, 0], edges[:, 1]]
        arrays += [eap, np.asarray(record["deltas"], float)[[rows[q] for q in shared]]]
    result = difference_fidelity(*arrays, threshold=config.fidelity_threshold, tie_rel_tol=config.stats.tie_rel_tol,
                                 n_boot=config.stats.n_boot, level=config.stats.ci_level, seed=config.stats.seed,
                                 weights=base.get("weights"))
    return {**result, "targets": "each model's own targets" if cell.token_mode == "own" else
            f"shared targets ({cell.token_mode})"}


def finite(x: Any) -> float | None:
    """A float, or None for a missing, NaN or infinite value."""
    return None if x is None or not np.isfinite(x) else float(x)


def funnel_of(err: SelectionError) -> list[dict]:
    """The sample counts after each selection stage of a selection that kept no question."""
    return funnel_rows(err.funnel)

