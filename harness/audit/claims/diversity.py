"""C6: inter-sample diversity rises after online RL in at least 95 % of experiments (pair x dataset x
alpha; Fig. 3a).

An experiment rises when its pooled diversity's relative change clears the smallest effect of
interest (point estimate > +margin; a fall: < -margin). The share of rising experiments is decided on
an interval that respects their dependence: experiments that share a base model and questions (one
base x dataset cluster; pairs trained from one base share its W on most questions) are resampled
together (cluster bootstrap), and the interval is at least as wide as the exact binomial interval
over the clusters (a cluster bootstrap over few clusters is too narrow, and degenerate when every
experiment rises). SUPPORTED needs its lower bound at or above the claimed rate minus a stated
tolerance. The paper's own statistic, the share of point-estimate rises, is reported beside it, and
each experiment's swap-permutation test (Holm over the 2E hypotheses) is reported, not decisive.
"""

from __future__ import annotations

import math

import numpy as np

from harness.analysis.stats.clustered import ClusteredShare, clustered_share_exact
from harness.analysis.stats.config import StatsConfig
from harness.analysis.stats.multiplicity import holm
from harness.analysis.stats.pooled import cell_test
from harness.audit.claims import ClaimSpec
from harness.audit.claims.common import (
    FamilyContext,
    GridCell,
    behaviour_of,
    cell_fidelity,
    edge_arrays,
    span_of,
    template_reason,
)
from harness.audit.claims.family import Outcome
from harness.audit.claims.robust import NOT_APPLICABLE, not_applicable
from harness.audit.config import AuditConfig
from harness.audit.records import CellData, Records
from harness.audit.verdicts import CORRECTION, Verdict
from harness.data.selection import SelectionError

MIN_CLUSTERS = 2


def rule_text(stats: StatsConfig) -> str:
    rate, tolerance = stats.claimed_rate, stats.claimed_rate_tolerance
    return (f"An experiment (online-RL pair x dataset x alpha) rises when its pooled inter-sample diversity (1 - mean "
            f"pairwise correlation of W) changes by more than + its margin {stats.sesoi_text('diversity')} (point "
            f"estimate; a fall: below minus the margin). The shares of rises and falls get {stats.ci_level:.0%} intervals: a "
            f"percentile cluster bootstrap over base-model x dataset clusters ({stats.n_boot} draws), widened to at "
            f"least the exact (Clopper-Pearson) interval over the clusters. SUPPORTED if the share of rises has its "
            f"lower bound >= {rate} - {tolerance:g} (the claimed rate minus the tolerance); REFUTED if the share of "
            f"falls has its lower bound > {1 - rate:.2g}, which a rise in >= {rate:.0%} of experiments cannot leave "
            f"room for; otherwise INCONCLUSIVE, saying what the data support (e.g. 'a majority rises; {rate:.0%} not "
            f"tested'); no change when every experiment ties (within {stats.tie_rel_tol:g} relative); unreachable "
            f"(INCONCLUSIVE, said so) with fewer than {MIN_CLUSTERS} clusters; INVALID if no experiment is usable "
            f"(an experiment whose targets are the answer's template, beyond template_limit, is not). "
            f"Reported beside it: the paper's statistic (share of point-estimate rises) and each experiment's "
            f"swap-permutation test, Holm over the 2E hypotheses ({CORRECTION}). Each token mode's cell is its own "
            f"decision")


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
            base_model = getattr(cell.pair, "base", None) or pair   # unknown base: the pair is its own cluster
            relative = pooled.diff / abs(pooled.base) if pooled.base else math.nan
            entry = {"experiment": label, "cluster": f"{base_model}/{dataset}", "n": pooled.n, "base": pooled.base,
                     "post": pooled.post, "diff": pooled.diff, "relative_change": relative,
                     "p_rise": pooled.p_claimed, "p_fall": pooled.p_opposite, "tie": pooled.no_change,
                     "fidelity": (cell_fidelity([cell]) or {}).get("spearman"), "span": span_of(cell),
                     "behaviour": behaviour_of(cell)}
            template = template_reason(entry["span"], records.config.template_limit)
            if pooled.invalid_reason is not None or not np.isfinite(relative) or template:
                entry["skipped"] = pooled.invalid_reason or template or "the base diversity is 0: no relative change"
            else:
                usable.append((entry, cell))
            details.append(entry)
        out.append(_outcome(records.config, g, text, details, usable))
    return out


def _outcome(config: AuditConfig, g: GridCell, text: str, details: list[dict], usable: list[tuple[dict, CellData]]
             ) -> Outcome:
    """The share of rises, decided on its interval (no family correction across cells: each token mode's
    cell is its own decision)."""
    stats = config.stats
    entries = [u[0] for u in usable]
    e, margin = len(entries), stats.sesoi_for("diversity")
    p = holm([x["p_rise"] for x in entries] + [x["p_fall"] for x in entries]) if e else np.array([])
    for i, x in enumerate(entries):
        x["p_holm_rise"], x["p_holm_fall"] = float(p[i]), float(p[e + i])
        x["outcome"] = ("rise" if x["relative_change"] > margin else
                        "fall" if x["relative_change"] < -margin else "tie" if x["tie"] else "within margin")
    clusters = [x["cluster"] for x in entries]
    rises = falls = None
    if e:
        resampling = {"n_boot": stats.n_boot, "seed": stats.seed, "ci_level": stats.ci_level}
        rises = clustered_share_exact([x["outcome"] == "rise" for x in entries], clusters, **resampling)
        falls = clustered_share_exact([x["outcome"] == "fall" for x in entries], clusters, **resampling)
    n_clusters = len(set(clusters))
    paper_share = float(np.mean([x["relative_change"] > 0 for x in entries])) if e else None
    label, reason, reachable = _label(e, n_clusters, entries, rises, falls, paper_share, stats)
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
                  "paper_share_rise": paper_share, "rise_rule": f"relative change > +{margin:g}",
                  "claimed_rate_inside_ci": bool(rises and rises.ci_high >= stats.claimed_rate >= rises.ci_low),
                  "correction": f"Holm over the 2E one-sided hypotheses of the experiments, reported ({CORRECTION})",
                  "reachable": reachable, "stats_config": stats.as_dict()},
        "provenance": {"audit_config": config.as_dict(), "metric_config": config.metrics.as_dict(),
                       "cache_keys": [u[1].provenance["cache_keys"] for u in usable]}})


def _label(e: int, n_clusters: int, entries: list[dict], rises: ClusteredShare | None, falls: ClusteredShare | None,
           paper_share: float | None, stats: StatsConfig) -> tuple[Verdict, str, bool]:
    if e == 0:
        return Verdict.INVALID, "no usable experiment", True
    if all(x["tie"] for x in entries):
        return Verdict.INCONCLUSIVE, f"no change: all {e} experiments tie", True
    if n_clusters < MIN_CLUSTERS:
        return (Verdict.INCONCLUSIVE, f"unreachable on this grid: {n_clusters} base-model x dataset cluster(s) < "
                f"{MIN_CLUSTERS}, so the share's interval cannot be estimated", False)
    rate, floor = stats.claimed_rate, stats.claimed_rate - stats.claimed_rate_tolerance
    counts = (f"{rises.hits}/{e} rise beyond the margin [{rises.ci_low:.2f}, {rises.ci_high:.2f}], {falls.hits}/{e} "
              f"fall [{falls.ci_low:.2f}, {falls.ci_high:.2f}] over {n_clusters} clusters; the paper's statistic "
              f"(point-estimate rises) {paper_share:.2f}")
    if rises.ci_low >= floor:
        return Verdict.SUPPORTED, f"{counts}: the share's lower bound is at or above {rate} - " \
                                  f"{stats.claimed_rate_tolerance:g}", True
    if falls.ci_low > 1 - rate:
        return Verdict.REFUTED, f"{counts}: more than {1 - rate:.2g} of experiments credibly fall", True
    supported = ("a majority rises" if rises.ci_low > 0.5 else "no share of rises is credibly above one half")
    return Verdict.INCONCLUSIVE, f"{counts}: {supported}; {rate:.0%} not tested (the lower bound " \
                                 f"{rises.ci_low:.2f} is below {floor:.2f})", True


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)
