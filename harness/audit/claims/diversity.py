"""C6: inter-sample diversity rises after online RL in at least 95 % of experiments (pair x dataset x
alpha; Fig. 3a).

Each experiment's rise is decided by its own test: the pooled diversity's swap-permutation test in
both directions, Holm over the 2E hypotheses of the E experiments. The share of experiments with a
significant rise (and with a significant fall) gets a cluster-bootstrap interval that resamples whole
pair x dataset clusters, since experiments of one cluster share models and questions.
"""

from __future__ import annotations

import math

import numpy as np

from harness.analysis.stats.clustered import ClusteredShare, clustered_share
from harness.analysis.stats.config import StatsConfig
from harness.analysis.stats.multiplicity import holm
from harness.analysis.stats.pooled import cell_test
from harness.audit.claims import ClaimSpec
from harness.audit.claims.common import FamilyContext, GridCell, cell_fidelity, edge_arrays
from harness.audit.claims.family import Outcome
from harness.audit.claims.robust import NOT_APPLICABLE, not_applicable
from harness.audit.config import AuditConfig
from harness.audit.records import CellData, Records
from harness.audit.verdicts import CORRECTION, Verdict
from harness.data.selection import SelectionError

MIN_CLUSTERS = 2


def rule_text(stats: StatsConfig) -> str:
    rate, majority = stats.claimed_rate, 0.5
    return (f"Each experiment (online-RL pair x dataset x alpha) is tested on its pooled inter-sample diversity "
            f"(1 - mean pairwise correlation of W): swap-permutation p in both directions ({stats.n_perm_pooled} "
            f"draws), Holm over the 2E hypotheses of the E experiments at {stats.significance}: a rise, a fall, or "
            f"undecided. The shares of rises and of falls get {stats.ci_level:.0%} percentile cluster-bootstrap "
            f"intervals (whole pair x dataset clusters resampled, {stats.n_boot} draws). SUPPORTED if the share "
            f"of rises is credibly above {majority} (interval low > {majority}) and {rate} is not excluded "
            f"(interval high >= {rate}); REFUTED if the share of falls is credibly above {1 - rate:.2g} (interval "
            f"low > {1 - rate:.2g}), which a rise in >= {rate:.0%} of experiments cannot leave room for; "
            f"INCONCLUSIVE otherwise, and with no change when every experiment ties (pooled difference within "
            f"{stats.tie_rel_tol:g} relative); unreachable (INCONCLUSIVE, said so) with fewer than {MIN_CLUSTERS} "
            f"clusters or when the smallest swap p cannot pass Holm; INVALID if no experiment is usable. Holm "
            f"across token modes is not applied: each mode's cell is its own decision")


def rule(claim: ClaimSpec, records: Records, grid: list[GridCell], context: FamilyContext) -> list[Outcome]:
    """One cell per token mode: the share of the grid's experiments whose pooled diversity rises."""
    stats = records.config.stats
    text = rule_text(stats)
    out = []
    for g in grid:
        details, usable = [], []
        for pair, dataset, a in context.experiments:
            label = f"{pair}/{dataset}/a{a}"
            cell = records.cell(pair, dataset, a, g.token_mode)
            if isinstance(cell, SelectionError):
                details.append({"experiment": label, "skipped": "selection left no sample"})
                continue
            pooled = cell_test("diversity", *edge_arrays(cell), records.config.metrics, stats).pooled
            entry = {"experiment": label, "cluster": f"{pair}/{dataset}", "n": pooled.n, "base": pooled.base,
                     "post": pooled.post, "diff": pooled.diff, "p_rise": pooled.p_claimed,
                     "p_fall": pooled.p_opposite, "tie": pooled.no_change,
                     "fidelity": (cell_fidelity([cell]) or {}).get("spearman")}
            if pooled.invalid_reason is not None:
                entry["skipped"] = pooled.invalid_reason
            else:
                usable.append((entry, cell, pooled.min_p))
            details.append(entry)
        out.append(_outcome(records.config, g, text, details, usable))
    return out


def _outcome(config: AuditConfig, g: GridCell, text: str, details: list[dict],
             usable: list[tuple[dict, CellData, float]]) -> Outcome:
    """The share of rises, decided on its cluster-bootstrap interval (no family correction across cells:
    each token mode's cell is its own decision)."""
    stats = config.stats
    entries = [u[0] for u in usable]
    e = len(entries)
    p = holm([x["p_rise"] for x in entries] + [x["p_fall"] for x in entries]) if e else np.array([])
    for i, x in enumerate(entries):
        x["p_holm_rise"], x["p_holm_fall"] = float(p[i]), float(p[e + i])
        x["outcome"] = ("rise" if p[i] < stats.significance else "fall" if p[e + i] < stats.significance
                        else "tie" if x["tie"] else "undecided")
    clusters = [x["cluster"] for x in entries]
    rises = falls = None
    if e:
        rises = clustered_share([x["outcome"] == "rise" for x in entries], clusters, n_boot=stats.n_boot,
                                seed=stats.seed, ci_level=stats.ci_level)
        falls = clustered_share([x["outcome"] == "fall" for x in entries], clusters, n_boot=stats.n_boot,
                                seed=stats.seed, ci_level=stats.ci_level)
    n_clusters = len(set(clusters))
    min_p = max((u[2] for u in usable), default=math.nan)
    label, reason, reachable = _label(e, n_clusters, min_p, entries, rises, falls, stats)
    share = lambda s: None if s is None else {  # noqa: E731
        "share": s.share, "hits": s.hits, "n": s.n, "ci": [_num(s.ci_low), _num(s.ci_high)]}
    return Outcome(g, text, decided=(label, reason), family_record=False, fields={
        "metric": "diversity", "n": e, "base_value": stats.claimed_rate, "post_value": rises.share if rises else None,
        "effect": rises.share - stats.claimed_rate if rises else None,
        "ci_low": _num(rises.ci_low) if rises else None, "ci_high": _num(rises.ci_high) if rises else None,
        "ci_method": rises.ci_method if rises else None,
        "fidelity": cell_fidelity([u[1] for u in usable]),
        "robustness": not_applicable(config, NOT_APPLICABLE["diversity"]),
        "funnel": [{"stage": "experiments", "n": len(details)}, {"stage": "usable", "n": e},
                   {"stage": "clusters", "n": n_clusters}],
        "extra": {"experiments": details, "share_rise": share(rises), "share_fall": share(falls),
                  "claimed_rate_inside_ci": bool(rises and rises.ci_high >= stats.claimed_rate >= rises.ci_low),
                  "correction": f"Holm over the 2E one-sided hypotheses of the experiments ({CORRECTION})",
                  "reachable": reachable, "stats_config": stats.as_dict()},
        "provenance": {"audit_config": config.as_dict(), "metric_config": config.metrics.as_dict(),
                       "cache_keys": [u[1].provenance["cache_keys"] for u in usable]}})


def _label(e: int, n_clusters: int, min_p: float, entries: list[dict], rises: ClusteredShare | None,
           falls: ClusteredShare | None, stats: StatsConfig) -> tuple[Verdict, str, bool]:
    if e == 0:
        return Verdict.INVALID, "no usable experiment", True
    if all(x["tie"] for x in entries):
        return Verdict.INCONCLUSIVE, f"no change: all {e} experiments tie", True
    if n_clusters < MIN_CLUSTERS:
        return (Verdict.INCONCLUSIVE, f"unreachable on this grid: {n_clusters} pair x dataset cluster(s) < "
                f"{MIN_CLUSTERS}, so the share's interval cannot be estimated", False)
    if min_p * 2 * e >= stats.significance:
        return (Verdict.INCONCLUSIVE, f"unreachable on this grid: the smallest swap p {min_p:.3g} cannot pass Holm "
                f"over {2 * e} hypotheses (needs < {stats.significance / (2 * e):.3g}; raise stats.n_perm_pooled)", False)
    counts = f"{rises.hits}/{e} rise [{rises.ci_low:.2f}, {rises.ci_high:.2f}], {falls.hits}/{e} fall " \
             f"[{falls.ci_low:.2f}, {falls.ci_high:.2f}] over {n_clusters} clusters"
    rate = stats.claimed_rate
    if rises.ci_low > 0.5 and rises.ci_high >= rate:
        return Verdict.SUPPORTED, f"{counts}: a majority rises and {rate} lies within reach", True
    if falls.ci_low > 1 - rate:
        return Verdict.REFUTED, f"{counts}: more than {1 - rate:.2g} of experiments credibly fall", True
    return Verdict.INCONCLUSIVE, counts, True


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)
