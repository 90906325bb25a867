"""How faithful EAP scores are to exact ablation, with its uncertainty.

- `sample_edges`: the edges to ablate. A graph small enough is taken whole (a census); otherwise a
  seeded uniform random sample (the default), or a sample stratified by |EAP| whose edges carry
  inverse-inclusion weights (then every correlation is the weighted one, and the record says so).
  The former default (top, middle and bottom |EAP| strata on purpose) was an extreme-groups design:
  it inflates a correlation and is gone.
- `measure_fidelity`: Spearman correlation between EAP scores and exact deltas on the ablated
  (question, edge) cells, a two-way bootstrap interval (questions and edges resampled
  independently), a status against a threshold (`FAITHFUL` / `UNFAITHFUL` / `UNCERTAIN`), the
  Spearman per destination kind, and Pearson, sign agreement, top-k recall and relative error.
- `status_band`: the status at several thresholds, so a report shows how much hangs on the choice.
- `fidelity_for_model`: sample, ablate exactly (float32, positions matched to the EAP scores'),
  measure.
- `fidelity_points`: the (EAP, exact) pairs a scatter plot shows.
Causal checks of the ranking are in `harness.circuit.causal`.

Why the default threshold is 0.5
--------------------------------
There is no calibration that makes one number right: exact ablation in float32 is deterministic,
so there is no noise ceiling to calibrate against, and how good a ranking must be depends on what
it is used for. 0.5 is a convention: a rank correlation of 0.5 means EAP's ranking of the edges
accounts for about 0.5² = 25 % of the variance of the exact ranking, and it is the conventional
boundary of a "large" correlation (Cohen 1988: 0.1 small, 0.3 medium, 0.5 large). It is read
against the lower end of the interval (FAITHFUL needs ci_lo ≥ threshold), never the point value.
`THRESHOLD_BAND` (0.3 ≈ 9 %, 0.5 ≈ 25 %, 0.7 ≈ 49 % of the variance) is reported beside it in every
record (`band`), so a reader who prefers another convention sees whether the status would move.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Sequence

import numpy as np
import torch
from scipy.stats import rankdata

from harness.circuit.ablation import (
    DEFAULT_CHUNK,
    DEFAULT_LOGIT_CHUNK,
    AblationKind,
    AblationResult,
    Edge,
    ablate_edges,
)
from harness.circuit.batches import LossFn, Sample, target_nll
from harness.circuit.eap import EdgeScores
from harness.circuit.graph import Graph
from harness.errors import UserError

DEFAULT_THRESHOLD = 0.5
THRESHOLD_BAND = (0.3, 0.5, 0.7)
SAMPLINGS = ("uniform", "stratified")


class Status(str, Enum):
    FAITHFUL = "FAITHFUL"        # the whole interval at or above the threshold
    UNFAITHFUL = "UNFAITHFUL"    # the whole interval below it
    UNCERTAIN = "UNCERTAIN"      # the interval straddles it, or nothing could be measured


# ---------------------------------------------------------------------------------- edge sampling

@dataclass(frozen=True)
class EdgeSample:
    """Edges to ablate. weights: inverse inclusion probability of each edge (N_h / n_h of its
    stratum; N / n for a uniform sample; 1 for a census). strata: stratum of each edge (0 = the
    largest |EAP|; all 0 unless stratified). sampling: 'all' (census), 'uniform' or 'stratified'."""

    edges: list[Edge]
    weights: list[float]
    strata: list[int]
    sampling: str
    n_real: int


def sample_edges(graph: Graph, n_edges: int, seed: int = 0, *, sampling: str = "uniform",
                 importance: torch.Tensor | None = None, n_strata: int = 4,
                 all_below: int = 400) -> EdgeSample:
    """Edges to ablate, seeded.

    Graphs with at most max(all_below, n_edges) real edges are taken whole (sampling 'all').
    'uniform': n_edges real edges drawn uniformly without replacement. 'stratified': the real edges
    ranked by importance ([n_src, n_dst], e.g. mean |EAP| over questions) are cut into n_strata
    equal-size strata, n_edges split equally among them (the remainder to the top strata), drawn
    uniformly within each; an edge's weight is its stratum's N_h / n_h.
    """
    if not isinstance(n_edges, int):
        raise TypeError("sample_edges(graph, n_edges, seed, *, sampling=..., importance=...): "
                        "importance is a keyword argument")
    if sampling not in SAMPLINGS:
        raise UserError(f"unknown edge sampling {sampling!r}; choose uniform or stratified")
    if n_edges < 1:
        raise UserError(f"the number of edges to sample must be at least 1, got {n_edges}")
    real = [tuple(e) for e in graph.mask().nonzero().tolist()]
    n_real = len(real)
    if n_real <= max(all_below, n_edges):
        return EdgeSample(real, [1.0] * n_real, [0] * n_real, "all", n_real)
    rng = np.random.default_rng(seed)
    if sampling == "uniform":
        picks = sorted(int(i) for i in rng.choice(n_real, size=n_edges, replace=False))
        return EdgeSample([real[i] for i in picks], [n_real / n_edges] * n_edges, [0] * n_edges,
                          "uniform", n_real)
    if importance is None:
        raise UserError("stratified edge sampling needs the EAP scores (their mean |score| per edge)")
    if not 1 <= n_strata <= n_edges:
        raise UserError(f"n_strata must be between 1 and the number of edges ({n_edges}), got {n_strata}")
    values = importance[graph.mask()].double().numpy()               # the order of `real`
    order = np.argsort(-values, kind="stable")                      # largest |EAP| first
    strata = np.array_split(order, n_strata)
    sizes = [n_edges // n_strata + (h < n_edges % n_strata) for h in range(n_strata)]
    chosen: list[tuple[int, float, int]] = []                      # (edge index, weight, stratum)
    for h, (members, n_h) in enumerate(zip(strata, sizes)):
        n_h = min(n_h, len(members))
        for i in rng.choice(members, size=n_h, replace=False):
            chosen.append((int(i), len(members) / n_h, h))
    chosen.sort()
    return EdgeSample([real[i] for i, _, _ in chosen], [w for _, w, _ in chosen], [h for _, _, h in chosen],
                      "stratified", n_real)


# ---------------------------------------------------------------------------------- correlations

def weighted_spearman(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """Spearman's rho with cell weights: the weighted Pearson correlation of weighted mid-ranks
    (each value's weighted mid-CDF). With equal weights it is exactly the ordinary Spearman.
    NaN when either variable is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if w is None or np.all(w == w.flat[0]):
        return float(_pearson_rows(rankdata(x)[None], rankdata(y)[None])[0])
    w = np.asarray(w, float)
    return _weighted_pearson(_weighted_midranks(x, w), _weighted_midranks(y, w), w)


def _weighted_midranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs, ws = x[order], w[order]
    new = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(new) - 1
    group_w = np.bincount(group, ws)
    below = np.cumsum(group_w) - group_w
    out = np.empty_like(x)
    out[order] = (below + 0.5 * group_w)[group] / ws.sum()
    return out


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    w = w / w.sum()
    dx, dy = x - (w * x).sum(), y - (w * y).sum()
    vx, vy = (w * dx * dx).sum(), (w * dy * dy).sum()
    if vx <= 0 or vy <= 0:
        return math.nan
    return float((w * dx * dy).sum() / math.sqrt(vx * vy))


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson of [B, n] arrays; NaN where a row is constant."""
    dx = x - x.mean(1, keepdims=True)
    dy = y - y.mean(1, keepdims=True)
    vx, vy = (dx * dx).sum(1), (dy * dy).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (dx * dy).sum(1) / np.sqrt(vx * vy)
    r[(vx <= 0) | (vy <= 0)] = np.nan
    return np.clip(r, -1.0, 1.0)


def bootstrap_spearman(est: np.ndarray, exact: np.ndarray, *, weights: np.ndarray | None = None,
                       strata: np.ndarray | None = None, resample_edges: bool = True,
                       n_boot: int = 1000, level: float = 0.95, seed: int = 0
                       ) -> tuple[float, float, int]:
    """Two-way percentile bootstrap of the (weighted) Spearman over [n_questions, n_edges] cells.

    Each replicate draws the questions with replacement and, independently, the edges with
    replacement (within each stratum when `strata` is given; not at all when resample_edges is
    False, as for a census of the edges), and recomputes the Spearman on the product of the drawn
    questions and edges. Resampling both ways counts the question × edge interaction twice, so the
    interval errs wide (conservative). Returns (lo, hi, replicates with a finite Spearman); the
    interval is NaN when fewer than half the replicates are finite.
    """
    if n_boot < 10:
        raise UserError(f"n_boot must be at least 10, got {n_boot}")
    if not 0 < level < 1:
        raise UserError(f"the interval level must be between 0 and 1, got {level}")
    est, exact = np.asarray(est, float), np.asarray(exact, float)
    n_q, n_e = est.shape
    rng = np.random.default_rng(seed)
    q_idx = rng.integers(0, n_q, size=(n_boot, n_q))
    if not resample_edges:
        e_idx = np.broadcast_to(np.arange(n_e), (n_boot, n_e))
    elif strata is None:
        e_idx = rng.integers(0, n_e, size=(n_boot, n_e))
    else:
        strata = np.asarray(strata)
        e_idx = np.empty((n_boot, n_e), dtype=int)
        for h in np.unique(strata):
            members = np.flatnonzero(strata == h)
            e_idx[:, members] = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
    weighted = weights is not None and not np.all(np.asarray(weights) == np.asarray(weights).flat[0])
    reps = np.empty(n_boot)
    block = max(1, 2_000_000 // max(1, n_q * n_e))
    for start in range(0, n_boot, block):
        qi, ei = q_idx[start:start + block], e_idx[start:start + block]
        xs = est[qi[:, :, None], ei[:, None, :]].reshape(len(qi), -1)
        ys = exact[qi[:, :, None], ei[:, None, :]].reshape(len(qi), -1)
        if weighted:
            ws = np.broadcast_to(np.asarray(weights, float)[ei][:, None, :], (len(qi), n_q, n_e)).reshape(len(qi), -1)
            reps[start:start + block] = [weighted_spearman(x, y, w) for x, y, w in zip(xs, ys, ws)]
        else:
            reps[start:start + block] = _pearson_rows(rankdata(xs, axis=1), rankdata(ys, axis=1))
    finite = reps[np.isfinite(reps)]
    if len(finite) < n_boot / 2:
        return math.nan, math.nan, len(finite)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi), len(finite)


# ---------------------------------------------------------------------------------- the record

def classify(spearman: float, ci: tuple[float, float], threshold: float) -> tuple[Status, str]:
    """FAITHFUL if ci_lo ≥ threshold, UNFAITHFUL if ci_hi < threshold, else UNCERTAIN; a NaN
    Spearman or interval is UNCERTAIN with the reason, never a decision."""
    lo, hi = ci
    if not math.isfinite(spearman):
        return Status.UNCERTAIN, ("Spearman is undefined (NaN): the EAP scores or the exact deltas are "
                                  "constant over the cells")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return Status.UNCERTAIN, ("no bootstrap interval: fewer than half of the replicates had a defined "
                                  "Spearman (too few questions or edges, or near-constant values)")
    if lo >= threshold:
        return Status.FAITHFUL, f"interval [{lo:.3f}, {hi:.3f}] at or above the threshold {threshold:g}"
    if hi < threshold:
        return Status.UNFAITHFUL, f"interval [{lo:.3f}, {hi:.3f}] below the threshold {threshold:g}"
    return Status.UNCERTAIN, f"interval [{lo:.3f}, {hi:.3f}] contains the threshold {threshold:g}"


def status_band(spearman: float, ci: tuple[float, float],
                thresholds: Sequence[float] = THRESHOLD_BAND) -> dict[str, str]:
    """The status at each threshold of the band: {"0.3": "FAITHFUL", "0.5": "UNCERTAIN", ...}."""
    return {f"{t:g}": classify(spearman, ci, t)[0].value for t in thresholds}


@dataclass(frozen=True)
class FidelityRecord:
    """Agreement of EAP scores with exact ablation deltas on n_questions × n_edges cells.

    spearman: (weighted when `weighted`) Spearman over the cells; ci: its two-way bootstrap
    interval at ci_level; status against `threshold` (see the module docstring for why 0.5),
    `reason` in words; band: the status at each threshold of THRESHOLD_BAND. by_destination:
    {kind: {"spearman", "n_cells"}} for kinds q, k, v, mlp, sink (paper layout) or attn, mlp,
    sink (block). sampling: all | uniform | stratified | given. positions / ablation /
    ablation_dtype / control: how the exact deltas were taken. Extras (unweighted): pearson,
    sign_agreement (cells with |exact| > 1e-9), topk_recall of the top_k edges by mean |exact|,
    relative_error Σ|eap − exact| / Σ|exact|.
    """

    spearman: float
    ci: tuple[float, float]
    status: str
    n_questions: int
    n_edges: int
    sampling: str
    threshold: float
    by_destination: dict[str, dict]
    reason: str = ""
    ci_level: float = 0.95
    n_cells: int = 0
    weighted: bool = False
    bootstrap: str = "questions x edges"
    n_boot: int = 0
    n_boot_finite: int = 0
    seed: int = 0
    band: dict[str, str] = field(default_factory=dict)
    positions: str = "all"
    ablation: str = "zero"
    ablation_dtype: str = ""
    control: bool = False
    pearson: float = math.nan
    sign_agreement: float = math.nan
    topk_recall: float = math.nan
    top_k: int = 0
    relative_error: float = math.nan

    def as_dict(self) -> dict:
        out = asdict(self)
        out["ci"] = list(self.ci)
        return out


Fidelity = FidelityRecord   # the former name


def _kind(graph: Graph, v: int) -> str:
    dest = graph.destinations[v]
    return dest.slot or dest.kind


def _kinds(graph: Graph) -> list[str]:
    seen: list[str] = []
    for v in range(graph.n_dst):
        if _kind(graph, v) not in seen:
            seen.append(_kind(graph, v))
    return seen


def measure_fidelity(eap: EdgeScores, ablation: AblationResult, top_k: int | None = None, *,
                     threshold: float = DEFAULT_THRESHOLD, n_boot: int = 1000, level: float = 0.95,
                     seed: int = 0) -> FidelityRecord:
    """Compare EAP scores with exact deltas on the ablated (question, edge) cells."""
    if list(eap.ids) != list(ablation.ids):
        raise UserError("EAP scores and ablation deltas are for different samples; run both on "
                        "the same input file")
    if eap.scores.shape != ablation.delta.shape:
        raise UserError(f"EAP scores {tuple(eap.scores.shape)} and ablation deltas "
                        f"{tuple(ablation.delta.shape)} differ in shape; use the same layout")
    if eap.positions.value != ablation.positions:
        raise UserError(f"EAP scored positions={eap.positions.value} but the ablation removed edges at "
                        f"positions={ablation.positions}; rerun `ablate --positions {eap.positions.value}`")
    if not -1 <= threshold <= 1:
        raise UserError(f"the fidelity threshold is a Spearman correlation in [-1, 1], got {threshold}")
    edges = ablation.edges
    us = torch.tensor([u for u, _ in edges])
    vs = torch.tensor([v for _, v in edges])
    est = eap.scores[:, us, vs].double().numpy()              # [n, k]
    exact = ablation.delta[:, us, vs].double().numpy()
    if not np.isfinite(exact).all():
        raise UserError("the ablation holds NaN deltas on its own edges; rerun `ablate`")
    n_q, n_e = est.shape
    weights = np.asarray(ablation.edge_weights, float) if ablation.edge_weights is not None else np.ones(n_e)
    weighted = ablation.sampling == "stratified"
    strata = np.asarray(ablation.edge_strata) if weighted and ablation.edge_strata is not None else None
    cell_w = np.tile(weights, n_q) if weighted else None
    rho = weighted_spearman(est.ravel(), exact.ravel(), cell_w)
    census = ablation.sampling == "all"
    lo, hi, n_finite = bootstrap_spearman(est, exact, weights=weights if weighted else None, strata=strata,
                                          resample_edges=not census, n_boot=n_boot, level=level, seed=seed)
    status, reason = classify(rho, (lo, hi), threshold)
    by_destination = {}
    kinds = np.array([_kind(eap.graph, v) for _, v in edges])
    for kind in _kinds(eap.graph):
        cols = np.flatnonzero(kinds == kind)
        if len(cols):
            by_destination[kind] = {
                "spearman": weighted_spearman(est[:, cols].ravel(), exact[:, cols].ravel(),
                                              np.tile(weights[cols], n_q) if weighted else None),
                "n_cells": int(n_q * len(cols))}
    est_flat, exact_flat = est.ravel(), exact.ravel()
    nonzero = np.abs(exact_flat) > 1e-9
    if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= n_e):
        raise UserError(f"--top-k must be between 1 and the {n_e} ablated edges, got {top_k}")
    k = top_k or max(1, n_e // 10)
    top_exact = set(np.argsort(-np.abs(exact).mean(0), kind="stable")[:k].tolist())
    top_est = set(np.argsort(-np.abs(est).mean(0), kind="stable")[:k].tolist())
    return FidelityRecord(
        spearman=rho, ci=(lo, hi), status=status.value, n_questions=n_q, n_edges=n_e,
        sampling=ablation.sampling, threshold=threshold, by_destination=by_destination, reason=reason,
        ci_level=level, n_cells=n_q * n_e, weighted=weighted,
        bootstrap="questions" if census else ("questions x edges within strata" if strata is not None
                                              else "questions x edges"),
        n_boot=n_boot, n_boot_finite=n_finite, seed=seed, band=status_band(rho, (lo, hi)),
        positions=ablation.positions, ablation=AblationKind(ablation.kind).value, ablation_dtype=ablation.dtype,
        control=ablation.control,
        pearson=float(_pearson_rows(est_flat[None], exact_flat[None])[0]),
        sign_agreement=float(np.mean(np.sign(est_flat[nonzero]) == np.sign(exact_flat[nonzero])))
        if nonzero.any() else math.nan,
        topk_recall=len(top_exact & top_est) / k, top_k=k,
        relative_error=float(np.abs(est_flat - exact_flat).sum() / max(np.abs(exact_flat).sum(), 1e-30)))


def with_sample(result: AblationResult, sample: EdgeSample) -> AblationResult:
    """The ablation result labelled with how its edges were drawn."""
    if list(result.edges) != list(sample.edges):
        raise ValueError("the ablation's edges are not the sample's")
    return replace(result, sampling=sample.sampling, edge_weights=list(sample.weights),
                   edge_strata=list(sample.strata))


def fidelity_for_model(model: torch.nn.Module, samples: Sequence[Sample], eap: EdgeScores, *,
                       n_edges: int = 64, seed: int = 0, pad_id: int = 0, progress: bool = True,
                       sampling: str = "uniform", n_strata: int = 4,
                       threshold: float = DEFAULT_THRESHOLD, n_boot: int = 1000, level: float = 0.95,
                       loss_fn: LossFn = target_nll, upcast: bool = True, fast: bool = True,
                       all_below: int = 400, chunk: int = DEFAULT_CHUNK, logit_chunk: int = DEFAULT_LOGIT_CHUNK,
                       importance: torch.Tensor | None = None) -> tuple[FidelityRecord, AblationResult]:
    """Sample edges (uniform by default, seeded; graphs of at most max(all_below, n_edges) edges
    whole), ablate them exactly (zero ablation, float32, at the EAP scores' own positions) and
    measure fidelity with a bootstrap interval. The EAP scores must come from the same loss_fn.
    importance [n_src, n_dst]: what a stratified sample's strata rank (default: these scores' mean
    |EAP|; another model's, so that two models ablate the same edges)."""
    chosen = sample_edges(eap.graph, n_edges, seed, sampling=sampling,
                          importance=eap.scores.abs().mean(0) if importance is None else importance,
                          n_strata=n_strata, all_below=all_below)
    result = ablate_edges(model, samples, chosen.edges, layout=eap.graph.layout.value, pad_id=pad_id,
                          positions=eap.positions, loss_fn=loss_fn, upcast=upcast, fast=fast,
                          chunk=chunk, logit_chunk=logit_chunk, progress=progress)
    result = with_sample(result, chosen)
    return measure_fidelity(eap, result, threshold=threshold, n_boot=n_boot, level=level, seed=seed), result


def fidelity_points(eap: EdgeScores, ablation: AblationResult) -> tuple[list[float], list[float]]:
    """(EAP scores, exact deltas) on the ablated (sample, edge) cells, flattened."""
    us = [u for u, _ in ablation.edges]
    vs = [v for _, v in ablation.edges]
    return eap.scores[:, us, vs].flatten().tolist(), ablation.delta[:, us, vs].flatten().tolist()


def difference_fidelity(eap_base: np.ndarray, exact_base: np.ndarray, eap_post: np.ndarray, exact_post: np.ndarray,
                        *, threshold: float, tie_rel_tol: float = 0.0, n_boot: int = 1000, level: float = 0.95,
                        seed: int = 0, weights: Sequence[float] | None = None) -> dict:
    """Does EAP get the change right? Per edge, the change post - base of the mean over questions, by EAP
    and by exact ablation (each input [n_questions, n_edges], the same questions and edges for both
    models); their Spearman over edges and the share of edges whose change EAP signs right (of those
    whose exact change is not 0), with a two-way percentile bootstrap over questions and edges (as
    bootstrap_spearman; scipy's bootstrap resamples one way only). A change within tie_rel_tol x the
    largest mean level of the drawn edges is a tie (0): the scores' rounding scales with the largest
    values, and below it a change's rank would differ between CPUs. Status as `classify` at `threshold`.
    weights [n_edges]: each edge's inverse inclusion probability (a stratified sample); the Spearman and
    the sign agreement are then the weighted ones, so they speak of every real edge, not the sample."""
    arrays = [np.asarray(a, float) for a in (eap_base, exact_base, eap_post, exact_post)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 2:
        raise UserError("difference fidelity needs four [questions, edges] arrays of one shape, got "
                        + ", ".join(str(a.shape) for a in arrays))
    eb, xb, ep, xp = arrays
    n_q, n_e = eb.shape
    w = np.ones(n_e) if weights is None else np.asarray(weights, float)
    if w.shape != (n_e,) or not np.all(w > 0):
        raise UserError(f"difference fidelity needs one positive weight per edge ({n_e}), got shape {w.shape}")
    weighted = not np.all(w == w[0])

    def change(post: np.ndarray, base: np.ndarray) -> np.ndarray:
        p, b = post.mean(axis=0), base.mean(axis=0)
        d = p - b
        return np.where(np.abs(d) <= tie_rel_tol * max(np.abs(p).max(), np.abs(b).max()), 0.0, d)

    def stats(qi: np.ndarray, ei: np.ndarray) -> tuple[float, float]:
        d_eap = change(ep[np.ix_(qi, ei)], eb[np.ix_(qi, ei)])
        d_exact = change(xp[np.ix_(qi, ei)], xb[np.ix_(qi, ei)])
        moved, we = d_exact != 0, w[ei]
        sign = (float(np.average(np.sign(d_eap[moved]) == np.sign(d_exact[moved]), weights=we[moved]))
                if moved.any() else math.nan)
        if np.ptp(d_eap) == 0 or np.ptp(d_exact) == 0:
            return math.nan, sign
        return weighted_spearman(d_eap, d_exact, we), sign   # the ordinary Spearman under equal weights

    rho, sign = stats(np.arange(n_q), np.arange(n_e))
    rng = np.random.default_rng(seed)
    reps = np.array([stats(rng.integers(0, n_q, n_q), rng.integers(0, n_e, n_e)) for _ in range(n_boot)])
    tail = (1 - level) / 2 * 100

    def interval(values: np.ndarray) -> tuple[float, float]:
        finite = values[np.isfinite(values)]
        if len(finite) < n_boot / 2:
            return math.nan, math.nan
        lo, hi = np.percentile(finite, [tail, 100 - tail])
        return float(lo), float(hi)

    ci, sign_ci = interval(reps[:, 0]), interval(reps[:, 1])
    status, why = classify(rho, ci, threshold)
    return {"spearman": rho, "ci": list(ci), "status": status.value, "reason": why, "sign_agreement": sign,
            "sign_agreement_ci": list(sign_ci), "n_questions": n_q, "n_edges": n_e, "threshold": threshold,
            "weighted": weighted,
            "tests": "per edge, the change post - base of the mean over questions: EAP against exact ablation"}
