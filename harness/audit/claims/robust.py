"""Robustness: the same claim, tested the same way on the same questions, with the EAP scores W
replaced by exact single-edge zero ablation L(edge removed) - L(clean) on the fidelity measurement's
sample of real edges (`CellData.fidelity[side]["deltas"]`, with each edge's inverse-inclusion weight).

What the sampled version estimates, per claim:
  C1 intensity  mean |W| over the cells: (real edges / cells) x the weighted mean of |delta| over the
                sampled real edges (Horvitz-Thompson: the weights N_h / n_h of a stratified sample sum
                to the real edges; equal under a uniform one) is unbiased for the exact-ablation
                intensity (structural zeros add 0).
  C3 kurtosis   not estimable: the excess kurtosis of n sampled values is at most about n, while the
                whole W's is in the hundreds.
  C2, C7        not applicable: the pooled histogram's per-model range is set by extreme values a
                sample misses, and a node's output-edge entropy needs every edge of its row.
Beside the exact verdict, "EAP on the same sample": the same test on EAP's scores at the same
questions and edges, so that the two differ only in the estimator.
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

APPLICABLE = {"intensity": "mean |delta| over the sampled real edges, weighted by inverse inclusion probability "
                           "and scaled to the cells (unbiased)"}
NOT_APPLICABLE = {
    "kurtosis": "not estimable from an edge sample: the excess kurtosis of n sampled values is at most about n "
                "(n - 3 for the population moments), while the whole W's is in the hundreds",
    "complexity": "the pooled histogram's per-model range is set by extreme values that an edge sample misses",
    "node_entropy": "a node's output-edge entropy needs every edge of its row, not a sample",
    "diversity": "not measured on a sample: the correlation of whole W matrices across questions",
}


def _values(cell: CellData, side: str, config: AuditConfig, source: str) -> dict[str, float]:
    """question id -> intensity on the fidelity record's sampled edges, from the exact deltas
    (`source` "exact") or from the EAP scores at the same questions and edges ("eap")."""
    record = cell.fidelity[side]
    if source == "exact":
        values = np.asarray(record["deltas"], dtype=float)              # [questions, sampled edges]
    else:
        scores = (cell.base if side == "base" else cell.post).scores.numpy()
        position = {q: i for i, q in enumerate(cell.selection.ids)}
        edges = np.asarray(record["edges"])
        values = scores[[position[q] for q in record["ids"]]][:, edges[:, 0], edges[:, 1]].astype(float)
    graph = cell.base.graph
    share = graph.n_edges / (graph.n_src * graph.n_dst) if config.metrics.include_structural_zeros else 1.0
    weights = np.asarray(record.get("weights") or np.ones(values.shape[1]), dtype=float)
    return dict(zip(record["ids"], (share * np.average(np.abs(values), axis=1, weights=weights)).tolist()))


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
    estimator = (f"exact single-edge zero ablation on {sample_text(config)} (float32), the fidelity "
                 "measurement's deltas")
    if metric not in APPLICABLE:
        return {g: {"estimator": estimator, "applicable": False, "verdict": None,
                    "reason": NOT_APPLICABLE.get(metric, "no sampled version of this metric")} for g, _ in rows}
    stats = config.stats
    direction = METRICS[metric].direction
    tests: dict[str, dict[tuple, PairedTest | None]] = {"exact": {}, "eap": {}}
    sample: dict[tuple, dict] = {}
    for _, cell in rows:
        key = (cell.pair.name, cell.dataset, cell.alpha, cell.token_mode)
        if key in tests["exact"] or not all("deltas" in cell.fidelity.get(s, {}) for s in ("base", "post")):
            for source in tests:
                tests[source].setdefault(key, None)
            continue
        for source in tests:
            base, post = _values(cell, "base", config, source), _values(cell, "post", config, source)
            shared = [q for q in base if q in post and np.isfinite(base[q]) and np.isfinite(post[q])]
            b = np.array([base[q] for q in shared])
            p, _ = ties_within_precision(b, np.array([post[q] for q in shared]), stats.tie_rel_tol)
            tests[source][key] = paired_test(b, p, direction, n_boot=stats.n_boot, n_perm=stats.n_perm,
                                             seed=stats.seed, zero_method=stats.zero_method, ci_level=stats.ci_level)
            sample.setdefault(key, {})[source] = {"questions": shared, "edges": cell.fidelity["base"]["edges"]}
    rule = verdict_rule(stats.significance, stats.min_n, f"{stats.ci_level:.0%} interval of the tested effect")
    by_source = {}
    for source, found in tests.items():   # each estimator its own Holm family over the same measurements
        measured = [(k, t) for k, t in found.items() if t is not None]
        decisions = decide_tests([t for _, t in measured], stats, rule, [
            relative_margin(t.mean_diff, t.ci_low, t.ci_high, t.mean_base, direction, stats, metric)
            for _, t in measured])
        by_source[source] = {k: (t, d) for (k, t), d in zip(measured, decisions)}
    by_key = by_source["exact"]
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
                  "measured_at": cell.measured_at, "holm_m": decision.holm_m,
                  "questions": sample[key]["exact"]["questions"], "edges": sample[key]["exact"]["edges"],
                  "eap_same_sample": _twin(*by_source["eap"][key], sample[key]["eap"])}
    return out


def _twin(test: PairedTest, decision, sample: dict) -> dict:
    """The same test on EAP's scores at the same questions and edges as the exact one."""
    return {"estimator": "EAP on the same questions and sampled edges", "verdict": decision.label.value,
            "reason": decision.reason, "effect": finite(test.mean_diff), "ci": [finite(test.ci_low), finite(test.ci_high)],
            "p_holm": finite(decision.p_adjusted), "n": test.n,
            "relative_change": finite(test.mean_diff / abs(test.mean_base)) if test.mean_base else None, **sample}


def not_applicable(config: AuditConfig, reason: str) -> dict:
    """The robustness record of a claim with no sampled version."""
    return {"estimator": f"exact single-edge zero ablation on {sample_text(config)}", "applicable": False,
            "verdict": None, "reason": reason}


def sample_text(config: AuditConfig) -> str:
    """The fidelity measurement's edge sample in words (harness.circuit.fidelity.sample_edges)."""
    whole = "; every real edge where the graph has at most 400"
    if config.fidelity_sampling == "uniform":
        return f"{config.fidelity_edges} uniform random real edges{whole}"
    return (f"{config.fidelity_edges} real edges stratified by the base model's mean |EAP| (4 strata, "
            f"inverse-inclusion weights{whole})")
