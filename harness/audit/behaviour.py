"""Does a metric track behaviour? Across runs (pair x dataset), each metric's change against the run's
accuracy change.

For every metric claim (C1-C3, C7) and alpha: one point per run and dataset, x = the accuracy change
post - base on the dataset's held-out questions (C9's effect), y = the metric's relative change on the
analysed questions (the cell's effect / |base value|). The Pearson correlation and the least-squares slope,
each with a percentile bootstrap CI that resamples runs (a run's datasets stay together: points of one run
share its training, so they are not independent), via scipy.stats.bootstrap over run indices. Seed
controls are left out (their accuracy change is between two runs, not from the base).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy.stats import bootstrap

from harness.audit.algorithm import is_seed_control
from harness.audit.verdicts import CellResult

METRIC_CLAIMS = ("C1", "C2", "C3", "C7")
MIN_RUNS = 5   # fewer runs: no interval; a bootstrap over 3 runs has 10 distinct resamples, over 5 runs 126


def _relative(cell: CellResult) -> float | None:
    if cell.effect is None or not cell.base_value:
        return None
    return cell.effect / abs(cell.base_value)


def metric_vs_accuracy(cells: Sequence[CellResult], *, n_resamples: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """One record per (claim, alpha, token mode) with at least 2 points: the points, r and slope with
    their run-cluster bootstrap CIs (None under MIN_RUNS runs), and whether the metric tracks behaviour."""
    accuracy = {(c.pair, c.dataset): c.effect for c in cells
                if c.claim_id == "C9" and c.effect is not None and not is_seed_control(c)}
    groups: dict[tuple, list[dict]] = {}
    for cell in cells:
        if cell.claim_id not in METRIC_CLAIMS or is_seed_control(cell) or (cell.pair, cell.dataset) not in accuracy:
            continue
        y = _relative(cell)
        if y is None or not math.isfinite(y):
            continue
        groups.setdefault((cell.claim_id, cell.metric, cell.alpha, cell.token_mode), []).append(
            {"pair": cell.pair, "dataset": cell.dataset, "accuracy_change": accuracy[(cell.pair, cell.dataset)],
             "metric_change": y, "verdict": cell.verdict.value})
    out = []
    for (claim_id, metric, alpha, token_mode), points in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        if len(points) < 2:
            continue
        runs = sorted({p["pair"] for p in points})
        x = np.array([p["accuracy_change"] for p in points])
        y = np.array([p["metric_change"] for p in points])
        r, slope = _pearson(x, y), _slope(x, y)
        r_ci = slope_ci = None
        if len(runs) >= MIN_RUNS:
            members = [np.array([i for i, p in enumerate(points) if p["pair"] == run]) for run in runs]

            def stat(index: np.ndarray, axis: int = -1) -> np.ndarray:
                rows = np.concatenate([members[int(k)] for k in np.atleast_1d(index)])
                return np.array([_pearson(x[rows], y[rows]), _slope(x[rows], y[rows])])

            boot = bootstrap((np.arange(len(runs)),), stat, vectorized=False, paired=False, n_resamples=n_resamples,
                             method="percentile", random_state=np.random.default_rng(seed))
            low, high = boot.confidence_interval
            r_ci, slope_ci = [float(low[0]), float(high[0])], [float(low[1]), float(high[1])]
        out.append({"claim_id": claim_id, "metric": metric, "alpha": alpha, "token_mode": token_mode, "points": points,
                    "n_points": len(points), "n_runs": len(runs), "pearson_r": r, "r_ci": r_ci, "slope": slope,
                    "slope_ci": slope_ci, "tracks": _tracks(r_ci, len(runs)),
                    "method": f"percentile bootstrap over the {len(runs)} runs (clusters), {n_resamples} resamples"})
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan
    return float(np.polyfit(x, y, 1)[0])


def _tracks(r_ci: list[float] | None, n_runs: int) -> str:
    if r_ci is None or not all(math.isfinite(v) for v in r_ci):
        return f"cannot tell: {n_runs} run(s), at least {MIN_RUNS} needed for an interval"
    if r_ci[0] > 0:
        return "tracks behaviour: the metric rises with accuracy (the correlation's CI lies above 0)"
    if r_ci[1] < 0:
        return "moves against behaviour: the metric falls as accuracy rises (the correlation's CI lies below 0)"
    return "not shown to track behaviour: the correlation's CI includes 0"


def edges_and_behaviour(cells: Sequence[CellResult]) -> list[dict[str, Any]]:
    """Per run, dataset, alpha and k of the causal claims on behaviour (CB1 restore, CB2 install): the
    chosen edges' share of the intensity change (|EAP| post - base, summed) beside the share of the
    behaviour gap patching them moves (mean movement toward the donor / mean |donor - recipient|)."""
    rows: dict[tuple, dict[str, Any]] = {}
    for cell in cells:
        record = (cell.extra or {}).get("interventions")
        if cell.claim_id not in ("CB1", "CB2") or record is None:
            continue
        for point in record["curve"]:
            key = (cell.pair, cell.dataset, cell.alpha, point["k"])
            row = rows.setdefault(key, {"pair": cell.pair, "dataset": cell.dataset, "alpha": cell.alpha,
                                        "k": point["k"], "change_share": point["change_share"]})
            row[record["part"]] = {"recovered_share": point["recovered_share"], "verdict": cell.verdict.value,
                                   "top": point["top"], "top_ci": point["top_ci"], "matched": point["matched"]}
    return list(rows.values())
