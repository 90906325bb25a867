"""Robustness: the same claim, tested the same way on the same questions, with the EAP scores W
replaced by exact single-edge zero ablation L(edge removed) - L(clean) on a uniform random sample of
real edges (the fidelity measurement's deltas, `CellData.fidelity[side]["deltas"]`).

What the sampled version estimates, per claim:
  C1 intensity  mean |W| over the cells: (real edges / cells) x mean |delta| over the sampled real
                edges is unbiased for the exact-ablation intensity (structural zeros add 0).
  C3 kurtosis   the excess kurtosis of the exact deltas over the cells, from the sample's raw moments
                scaled to the cells (zeros add nothing to them): consistent, biased at small samples.
  C2, C7        not applicable: the pooled histogram's per-model range is set by extreme values a
                sample misses, and a node's output-edge entropy needs every edge of its row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.analysis.metrics import METRICS
from harness.analysis.stats.paired import PairedTest, paired_test
from harness.analysis.stats.pooled import cell_test
from harness.analysis.stats.resampling import ties_within_precision
from harness.audit.claims.common import GridCell, finite, relative_margin
from harness.audit.claims.family import decide_tests
from harness.audit.config import AuditConfig
from harness.audit.records import CellData, Records
from harness.audit.verdicts import verdict_rule

APPLICABLE = {"intensity": "mean |delta| over the sampled real edges, scaled to the cells (unbiased)",
              "kurtosis": "excess kurtosis of the deltas over the cells, from the sample's moments (consistent)"}
NOT_APPLICABLE = {
    "complexity": "the pooled histogram's per-model range is set by extreme values that an edge sample misses",
    "node_entropy": "a node's output-edge entropy needs every edge of its row, not a sample",
    "diversity": "not measured on a sample: the correlation of whole W matrices across questions",
}


def _values(cell: CellData, side: str, metric: str, config: AuditConfig) -> dict[str, float]:
    """question id -> the metric of that question's exact deltas on the sampled edges."""
    record = cell.fidelity[side]
    deltas = np.asarray(record["deltas"], dtype=float)              # [questions, sampled edges]
    graph = cell.base.graph
    share = graph.n_edges / (graph.n_src * graph.n_dst) if config.metrics.include_structural_zeros else 1.0
    if metric == "intensity":
        values = share * np.abs(deltas).mean(axis=1)
    else:   # kurtosis of the cell distribution: raw moments of the sample, scaled by the share of real cells
        raw = [share * np.mean(deltas**k, axis=1) for k in (1, 2, 3, 4)]
        mean = raw[0]
        var = raw[1] - mean**2
        m4 = raw[3] - 4 * mean * raw[2] + 6 * mean**2 * raw[1] - 3 * mean**4
        with np.errstate(divide="ignore", invalid="ignore"):
            values = m4 / var**2 - 3.0
    return dict(zip(record["ids"], values.tolist()))


def robustness(records: Records, metric: str, rows: list[tuple[GridCell, CellData]]) -> dict[GridCell, dict]:
    """The robustness record of each (grid cell, cell data) of a metric claim's family, on the configured
    `robustness_estimator`."""
    if records.config.robustness_estimator == "lookahead":
        return _on_estimator(records, metric, rows, "lookahead")
    return _on_exact_sample(records.config, metric, rows)


def _on_estimator(records: Records, metric: str, rows: list[tuple[GridCell, CellData]],
                  method: str) -> dict[GridCell, dict]:
    """The claim's own test on every edge and question, with W from another estimator; Holm over the family."""
    stats = records.config.stats
    estimator = f"{method} estimator on every edge (harness.circuit.lookahead), the claim's own test"
    tests = []
    for _, cell in rows:
        base, post = records.estimates(cell, method)
        tests.append(cell_test(metric, base.scores.numpy(), post.scores.numpy(), base.mask.numpy(),
                               records.config.metrics, stats))

    def values(ct):
        if ct.decisive == "paired":
            return ct.paired.mean_base, ct.paired.mean_diff
        return ct.pooled.base, ct.pooled.diff

    margins = [relative_margin(values(ct)[1], ct.decisive_test.ci_low, ct.decisive_test.ci_high, values(ct)[0],
                               METRICS[metric].direction, stats, metric) for ct in tests]
    rule = verdict_rule(stats.significance, stats.min_n, f"{stats.ci_level:.0%} interval of the tested effect")
    decisions = decide_tests([ct.decisive_test for ct in tests], stats, rule, margins)
    return {g: {"estimator": estimator, "applicable": True, "verdict": d.label.value, "reason": d.reason,
                "effect": finite(values(ct)[1]), "ci": [finite(ct.decisive_test.ci_low), finite(ct.decisive_test.ci_high)],
                "p_value": finite(ct.decisive_test.p_claimed), "p_holm": finite(d.p_adjusted), "n": ct.decisive_test.n,
                "n_edges": int(cell.base.graph.n_edges), "measured_at": cell.alpha, "holm_m": d.holm_m}
            for (g, cell), ct, d in zip(rows, tests, decisions)}


def _on_exact_sample(config: AuditConfig, metric: str, rows: list[tuple[GridCell, CellData]]) -> dict[GridCell, dict]:
    """Exact ablation on the fidelity check's edge sample; Holm runs over the family's distinct
    measurements (one per pair, dataset, alpha and token mode)."""
    estimator = (f"exact single-edge zero ablation on {config.fidelity_edges} uniform random real edges "
                 f"(float32), the fidelity measurement's deltas")
    if metric not in APPLICABLE:
        return {g: {"estimator": estimator, "applicable": False, "verdict": None,
                    "reason": NOT_APPLICABLE.get(metric, "no sampled version of this metric")} for g, _ in rows}
    stats = config.stats
    direction = METRICS[metric].direction
    tests: dict[tuple, PairedTest | None] = {}
    for _, cell in rows:
        key = (cell.pair.name, cell.dataset, cell.alpha, cell.token_mode)
        if key in tests or not all("deltas" in cell.fidelity.get(s, {}) for s in ("base", "post")):
            tests.setdefault(key, None)
            continue
        base, post = _values(cell, "base", metric, config), _values(cell, "post", metric, config)
        shared = [q for q in base if q in post and np.isfinite(base[q]) and np.isfinite(post[q])]
        b = np.array([base[q] for q in shared])
        p, _ = ties_within_precision(b, np.array([post[q] for q in shared]), stats.tie_rel_tol)
        tests[key] = paired_test(b, p, direction, n_boot=stats.n_boot, n_perm=stats.n_perm, seed=stats.seed,
                                 zero_method=stats.zero_method, ci_level=stats.ci_level)
    measured = [(k, t) for k, t in tests.items() if t is not None]
    rule = verdict_rule(stats.significance, stats.min_n, f"{stats.ci_level:.0%} interval of the tested effect")
    decisions = decide_tests(
        [t for _, t in measured], stats, rule,
        [relative_margin(t.mean_diff, t.ci_low, t.ci_high, t.mean_base, direction, stats, metric) for _, t in measured])
    by_key = {k: (t, d) for (k, t), d in zip(measured, decisions)}
    out: dict[GridCell, dict[str, Any]] = {}
    for g, cell in rows:
        key = (cell.pair.name, cell.dataset, cell.alpha, cell.token_mode)
        if key not in by_key:
            out[g] = {"estimator": estimator, "applicable": True, "verdict": None,
                      "reason": "not measured: no exact deltas for this cell" + (
                          f" (fidelity_alpha = {cell.measured_at:g}: measured there only, not copied)"
                          if cell.measured_at != cell.alpha else "")}
            continue
        test, decision = by_key[key]
        out[g] = {"estimator": estimator, "estimates": APPLICABLE[metric], "applicable": True,
                  "verdict": decision.label.value, "reason": decision.reason, "effect": finite(test.mean_diff),
                  "ci": [finite(test.ci_low), finite(test.ci_high)], "p_value": finite(test.p_claimed),
                  "p_holm": finite(decision.p_adjusted), "n": test.n, "n_edges": config.fidelity_edges,
                  "base_value": finite(test.mean_base), "post_value": finite(test.mean_post),
                  "relative_change": finite(test.mean_diff / abs(test.mean_base)) if test.mean_base else None,
                  "measured_at": cell.measured_at, "holm_m": decision.holm_m}
    return out


def not_applicable(config: AuditConfig, reason: str) -> dict:
    """The robustness record of a claim with no sampled version."""
    return {"estimator": f"exact single-edge zero ablation on {config.fidelity_edges} uniform random real "
                         "edges", "applicable": False, "verdict": None, "reason": reason}
