"""Judging a claim's family of cells together: p-values of all selected cells first, then Holm
(and BH, reported) within the family, then one CellResult per cell.

A family is the claim's cells selected in this pytest session (after -k and deselection); its
size and members are recorded in every cell's `extra`, so a report says what Holm corrected for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy.stats import binom

from harness.analysis.accuracy import accuracy_table
from harness.audit.claims import CLAIMS_BY_ID
from harness.analysis.metrics import METRICS, MetricConfig, complexity_band, per_sample_values
from harness.audit.stages import AuditPipeline, Cell
from harness.models.registry import ONLINE_RL, PREFERENCE_KINDS
from harness.data.selection import SelectionError
from harness.analysis.stats.config import StatsConfig
from harness.analysis.stats.comparisons import alpha_trend, binomial_rate_test, compare_effects, tost_paired
from harness.analysis.stats.multiplicity import benjamini_hochberg
from harness.analysis.stats.pooled import cell_test
from harness.audit.verdicts import family_verdicts, verdict_rule
from harness.audit.verdicts import CellResult, Verdict, make_cell_id

METRIC_CONFIG = MetricConfig()
STATS = StatsConfig(n_boot=1000, n_perm=2000, n_perm_pooled=500, seed=0)
CLAIM_METRIC = {"C1": "intensity", "C2": "complexity", "C3": "kurtosis", "C7": "node_entropy"}
# Which pairs each claim reads: online RL for the paper's RL claims, preference pairs for C4.
CLAIM_KINDS = {"C1": (ONLINE_RL,), "C2": (ONLINE_RL,), "C3": (ONLINE_RL,), "C5": (ONLINE_RL,),
               "C6": (ONLINE_RL,), "C7": (ONLINE_RL,), "C4": PREFERENCE_KINDS}
C6_RATE = 0.95
MIN_ALPHAS = 3


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


def cell_id(claim_id: str, g: GridCell) -> str:
    mode = g.token_mode if g.token_mode not in (None, "own") else None
    return make_cell_id(claim_id, CLAIMS_BY_ID[claim_id].name, g.pair, g.dataset, g.metric, mode, alpha=g.alpha)


def _scores(cell: Cell) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return cell.base.scores.numpy(), cell.post.scores.numpy(), cell.base.mask.numpy()


def gate(audit: AuditPipeline, cells: list[Cell]) -> tuple[bool, float, str]:
    """Fidelity gate over the cells a verdict reads: (passes, smallest Spearman, note)."""
    threshold = audit.config.fidelity_threshold
    worst = min(float(r["spearman"]) for c in cells for r in c.fidelity.values())
    if not worst >= threshold:  # NaN fails too
        return False, worst, f"EAP-vs-ablation Spearman {worst:.3g} < threshold {threshold}"
    return True, worst, ""


def _fidelity_extra(cells: list[Cell]) -> dict:
    return {f"{c.pair.name}/a{c.alpha}/{side}": rec for c in cells for side, rec in c.fidelity.items()}


def _family_extra(cells: list[GridCell], claim_id: str) -> dict:
    return {"family_size": len(cells), "family": [cell_id(claim_id, g) for g in cells],
            "correction": "Holm within the family (BH reported)", "stats_config": STATS.as_dict()}


def _bh(tests: list, usable: list[bool]) -> np.ndarray:
    return benjamini_hochberg([t.p_claimed if u else math.nan for t, u in zip(tests, usable)])


def _num(x: Any) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _invalid(audit: AuditPipeline, claim_id: str, g: GridCell, reason: str, funnel: list | None = None,
             rule: str | None = None) -> CellResult:
    claim = CLAIMS_BY_ID[claim_id]
    return CellResult(claim_id, claim.name, cell_id(claim_id, g), Verdict.INVALID,
                      rule or verdict_rule(STATS.alpha, STATS.min_n), reason, g.pair, g.dataset, g.alpha,
                      g.metric, g.token_mode, fidelity_threshold=audit.config.fidelity_threshold,
                      funnel=funnel or [], provenance={"audit_config": audit.config.as_dict()})


def _try_cell(audit: AuditPipeline, pair: str, dataset: str, alpha: float, mode: str) -> Cell | SelectionError:
    try:
        return audit.cell(pair, dataset, alpha, mode)
    except SelectionError as err:
        return err


def _funnel_of(err: SelectionError) -> list[dict]:
    return [{"stage": s.step, "n": s.count, "rule": s.rule} for s in err.funnel]


# ---------------------------------------------------------------- C1, C2, C3, C7: one metric rises/falls


def metric_family(audit: AuditPipeline, claim_id: str, grid: list[GridCell]) -> dict[GridCell, CellResult]:
    """Paired per-question test of the claim's metric in each (pair, dataset, alpha, mode) cell."""
    metric = CLAIM_METRIC[claim_id]
    claim = CLAIMS_BY_ID[claim_id]
    rows = []
    for g in grid:
        cell = _try_cell(audit, g.pair, g.dataset, g.alpha, g.token_mode)
        if isinstance(cell, SelectionError):
            rows.append((g, cell, None, (True, None, "")))
            continue
        base, post, mask = _scores(cell)
        rows.append((g, cell, cell_test(metric, base, post, mask, METRIC_CONFIG, STATS), gate(audit, [cell])))
    judged = [r for r in rows if r[2] is not None]
    tests = [r[2].decisive_test for r in judged]
    verdicts = family_verdicts(tests, alpha=STATS.alpha, min_n=STATS.min_n, fidelity_ok=[r[3][0] for r in judged])
    usable = [v.label is not Verdict.INVALID for v in verdicts]
    bh = _bh(tests, usable)
    out: dict[GridCell, CellResult] = {}
    for (g, cell, ct, (_, worst, note)), verdict, p_bh, test in zip(judged, verdicts, bh, tests):
        extra = {**_family_extra(grid, claim_id), "decisive": ct.decisive,
                 "pooled": {"base": ct.pooled.base, "post": ct.pooled.post, "diff": ct.pooled.diff,
                            "ci": [ct.pooled.ci_low, ct.pooled.ci_high], "p": ct.pooled.p_permutation},
                 "fidelity": _fidelity_extra([cell]), "t_cut": cell.selection.t_cut, "t_bar": cell.selection.t_bar}
        if ct.paired is not None:
            extra.update(wilcoxon=ct.paired.wilcoxon_method, p_permutation=ct.paired.p_permutation,
                         relative_change=ct.paired.relative_change, n_zero=ct.paired.n_zero)
        if metric == "complexity":   # sensitivity to the bin count B, reported as a band
            band = complexity_band(*_scores(cell), METRIC_CONFIG)
            extra["complexity_band"] = {"bins": list(band.bins), "pooled_diff": list(band.pooled_diff),
                                        "per_sample_mean_diff": list(band.per_sample_mean_diff),
                                        "diff_min": band.diff_min, "diff_max": band.diff_max,
                                        "sign_consistent": band.sign_consistent}
        paired = ct.paired
        reason = verdict.reason + (f"; {note}" if note else "")
        out[g] = CellResult(
            claim.id, claim.name, cell_id(claim_id, g), verdict.label, verdict.rule, reason,
            g.pair, g.dataset, g.alpha, metric, g.token_mode, n=test.n,
            base_value=_num(paired.mean_base if paired else ct.pooled.base),
            post_value=_num(paired.mean_post if paired else ct.pooled.post),
            effect=_num(paired.mean_diff if paired else ct.pooled.diff),
            ci_low=_num(test.ci_low), ci_high=_num(test.ci_high), ci_method=test.ci_method,
            effect_size=_num(paired.hedges_dz) if paired else None, p_value=_num(test.p_claimed),
            p_holm=_num(verdict.p_adjusted), p_bh=_num(p_bh), fidelity=_num(worst),
            fidelity_threshold=audit.config.fidelity_threshold, funnel=cell.funnel, extra=extra,
            provenance={**cell.provenance, "metric_config": METRIC_CONFIG.as_dict()})
    for g, err, _, _ in rows:
        if isinstance(err, SelectionError):
            out[g] = _invalid(audit, claim_id, g, f"selection left no sample: {str(err).splitlines()[0]}",
                              _funnel_of(err))
    return out


# ---------------------------------------------------------------- C4: preference pairs deviate


def dpo_family(audit: AuditPipeline, grid: list[GridCell], rl_pairs: list[str]) -> dict[GridCell, CellResult]:
    """Oriented Hedges d_z of the preference pair vs the mean over online-RL pairs on the same
    dataset, alpha, metric and token mode; DPO 'deviates' when its effect is smaller."""
    claim = CLAIMS_BY_ID["C4"]
    rule = (f"SUPPORTED if the preference pair's oriented effect (Hedges d_z in the online-RL claim's "
            f"direction) is smaller than the online-RL pairs' mean: bootstrap p (Holm within C4) < "
            f"{STATS.alpha}; REFUTED if it is larger with Holm p < {STATS.alpha}; INVALID if a cell is "
            f"degenerate, has n < {STATS.min_n}, no online-RL pair to compare, or fails the fidelity gate; "
            "otherwise INCONCLUSIVE")
    rows = []
    for g in grid:
        direction = METRICS[g.metric].direction
        cell = _try_cell(audit, g.pair, g.dataset, g.alpha, g.token_mode)
        if isinstance(cell, SelectionError):
            rows.append((g, None, FamilyTest(0, math.nan, math.nan, f"selection: {str(cell).splitlines()[0]}"),
                         None, (True, None, ""), [], None))
            continue
        diffs = _diffs(cell, g.metric)
        rl_cells = [c for c in (_try_cell(audit, p, g.dataset, g.alpha, g.token_mode) for p in rl_pairs)
                    if isinstance(c, Cell)]
        rl_diffs = [_diffs(c, g.metric) for c in rl_cells]
        usable_rl = [d for d in rl_diffs if d.size >= 3 and d.std() > 0]
        if not usable_rl or diffs.size < 3 or diffs.std() == 0:
            why = "no online-RL pair with usable data on this dataset" if not usable_rl else "degenerate differences"
            rows.append((g, cell, FamilyTest(diffs.size, math.nan, math.nan, why), None,
                         gate(audit, [cell, *rl_cells]), rl_cells, None))
            continue
        comp = compare_effects(diffs, usable_rl, direction, n_boot=STATS.n_boot, seed=STATS.seed)
        opposite = compare_effects(diffs, usable_rl, -direction, n_boot=STATS.n_boot, seed=STATS.seed)
        base_vals = per_sample_values(g.metric, *_scores(cell), METRIC_CONFIG)
        tost = tost_paired(base_vals.base, base_vals.post, STATS.equivalence_margin_rel, alpha=STATS.alpha)
        rows.append((g, cell, FamilyTest(diffs.size, comp.p_weaker, opposite.p_weaker), comp,
                     gate(audit, [cell, *rl_cells]), rl_cells, (base_vals, tost)))
    tests = [r[2] for r in rows]
    verdicts = family_verdicts(tests, alpha=STATS.alpha, min_n=STATS.min_n, fidelity_ok=[r[4][0] for r in rows])
    bh = _bh(tests, [v.label is not Verdict.INVALID for v in verdicts])
    out = {}
    for (g, cell, test, comp, (_, worst, note), rl_cells, extra_vals), verdict, p_bh in zip(rows, verdicts, bh):
        extra = {**_family_extra(grid, "C4"), "compared_with": [c.pair.name for c in rl_cells],
                 "algorithm_kind": audit.pair(g.pair).algorithm_kind,
                 "fidelity": _fidelity_extra([c for c in [cell, *rl_cells] if c is not None])}
        if comp is not None:
            base_vals, tost = extra_vals
            extra.update(effect_dpo=comp.effect_dpo, effect_rl=comp.effect_rl, effect_rl_each=comp.effect_rl_each,
                         n_rl=comp.n_rl, p_stronger=test.p_opposite,
                         equivalence={"p_tost": tost.p_tost, "margin_rel": tost.margin_rel,
                                      "equivalent": tost.equivalent})
        reason = (verdict.reason if test.invalid_reason is None or verdict.label is not Verdict.INVALID
                  else test.invalid_reason) + (f"; {note}" if note else "")
        out[g] = CellResult(
            "C4", claim.name, cell_id("C4", g), verdict.label, rule, reason, g.pair, g.dataset, g.alpha,
            g.metric, g.token_mode, n=test.n,
            base_value=_num(float(np.mean(extra_vals[0].base))) if extra_vals else None,
            post_value=_num(float(np.mean(extra_vals[0].post))) if extra_vals else None,
            effect=_num(comp.difference) if comp else None, ci_low=_num(comp.ci_low) if comp else None,
            ci_high=_num(comp.ci_high) if comp else None, ci_method=comp.ci_method if comp else None,
            effect_size=_num(comp.effect_dpo) if comp else None, p_value=_num(test.p_claimed),
            p_holm=_num(verdict.p_adjusted), p_bh=_num(p_bh), fidelity=_num(worst),
            fidelity_threshold=audit.config.fidelity_threshold, funnel=cell.funnel if cell else [],
            extra=extra, provenance={**(cell.provenance if cell else {}), "metric_config": METRIC_CONFIG.as_dict()})
    return out


def _diffs(cell: Cell, metric: str) -> np.ndarray:
    values = per_sample_values(metric, *_scores(cell), METRIC_CONFIG)
    return np.asarray(values.post - values.base, dtype=float)


# ---------------------------------------------------------------- C5: counter-examples fade with alpha


def fade_family(audit: AuditPipeline, grid: list[GridCell], alphas: list[float]) -> dict[GridCell, CellResult]:
    """Spearman trend over alpha of each cell's oriented Hedges d_z (exact permutation p)."""
    claim = CLAIMS_BY_ID["C5"]
    rule = (f"SUPPORTED if the effect in the claimed direction (Hedges d_z of post - base, oriented) "
            f"grows with alpha: exact permutation p of Spearman rho (Holm within C5) < {STATS.alpha}; "
            f"REFUTED if it shrinks with Holm p < {STATS.alpha}; INVALID with fewer than {MIN_ALPHAS} usable "
            "alpha levels or a failed fidelity gate; otherwise INCONCLUSIVE")
    rows = []
    for g in grid:
        direction = METRICS[g.metric].direction
        levels, effects, cells = [], [], []
        for a in sorted(alphas):
            cell = _try_cell(audit, g.pair, g.dataset, a, g.token_mode)
            if isinstance(cell, SelectionError):
                continue
            d = _diffs(cell, g.metric)
            if d.size >= 3 and d.std() > 0:
                levels.append(a)
                effects.append(float(d.mean() / d.std(ddof=1)))
                cells.append(cell)
        if len(levels) < MIN_ALPHAS:
            test = FamilyTest(len(levels), math.nan, math.nan,
                              f"{len(levels)} usable alpha levels (< {MIN_ALPHAS}) in {sorted(alphas)}")
            rows.append((g, test, None, levels, effects, cells, (True, None, "")))
            continue
        trend = alpha_trend(levels, effects, direction, seed=STATS.seed)
        back = alpha_trend(levels, effects, -direction, seed=STATS.seed)
        test = FamilyTest(len(levels), trend.p_increasing, back.p_increasing, trend.invalid_reason)
        rows.append((g, test, trend, levels, effects, cells, gate(audit, cells)))
    tests = [r[1] for r in rows]
    verdicts = family_verdicts(tests, alpha=STATS.alpha, min_n=MIN_ALPHAS, fidelity_ok=[r[6][0] for r in rows])
    bh = _bh(tests, [v.label is not Verdict.INVALID for v in verdicts])
    out = {}
    for (g, test, trend, levels, effects, cells, (_, worst, note)), verdict, p_bh in zip(rows, verdicts, bh):
        direction = METRICS[g.metric].direction
        counter = [a for a, e in zip(levels, effects) if direction * e < 0]
        reason = (test.invalid_reason if verdict.label is Verdict.INVALID and test.invalid_reason
                  else verdict.reason) + (f"; {note}" if note else "")
        out[g] = CellResult(
            "C5", claim.name, cell_id("C5", g), verdict.label, rule, reason, g.pair, g.dataset, None,
            g.metric, g.token_mode, n=test.n, effect=_num(trend.rho) if trend else None,
            ci_method="Spearman rho of oriented d_z vs alpha (no interval: few alpha levels)",
            p_value=_num(test.p_claimed), p_holm=_num(verdict.p_adjusted), p_bh=_num(p_bh), fidelity=_num(worst),
            fidelity_threshold=audit.config.fidelity_threshold,
            funnel=[{"stage": f"alpha={a}", "n": c.n} for a, c in zip(levels, cells)],
            extra={**_family_extra(grid, "C5"), "alphas": levels, "hedges_dz": effects,
                   "counter_example_alphas": counter, "trend_method": trend.method if trend else None,
                   "fidelity": _fidelity_extra(cells)},
            provenance={**(cells[0].provenance if cells else {}), "metric_config": METRIC_CONFIG.as_dict()})
    return out


# ---------------------------------------------------------------- C6: diversity rises in >= 95% of experiments


def diversity_family(audit: AuditPipeline, grid: list[GridCell], experiments: list[tuple[str, str, float]]
                     ) -> dict[GridCell, CellResult]:
    """Share of experiments (online-RL pair x dataset x alpha) whose pooled diversity rose, against 95%."""
    claim = CLAIMS_BY_ID["C6"]
    rule = (f"An experiment counts when its pooled inter-sample diversity (1 - mean pairwise correlation) "
            f"is higher after post-training (as the paper counts). SUPPORTED if the exact binomial p for "
            f"rate > {C6_RATE} (Holm across token modes) < {STATS.alpha}; REFUTED if the p for rate < {C6_RATE} "
            f"is < {STATS.alpha}; INVALID if no experiment passes selection and the fidelity gate; "
            "otherwise INCONCLUSIVE. Experiments share models and questions, so the binomial p is optimistic")
    rows = []
    for g in grid:
        details, rises = [], 0
        used = []
        for pair, dataset, a in experiments:
            cell = _try_cell(audit, pair, dataset, a, g.token_mode)
            if isinstance(cell, SelectionError):
                details.append({"experiment": f"{pair}/{dataset}/a{a}", "skipped": "selection left no sample"})
                continue
            ok, worst, note = gate(audit, [cell])
            ct = cell_test("diversity", *_scores(cell), METRIC_CONFIG, STATS)
            pooled = ct.pooled
            entry = {"experiment": f"{pair}/{dataset}/a{a}", "n": pooled.n, "base": pooled.base,
                     "post": pooled.post, "diff": pooled.diff, "p_rise": pooled.p_permutation, "fidelity": worst}
            if not ok or pooled.invalid_reason is not None:
                entry["skipped"] = note or pooled.invalid_reason
            else:
                rises += pooled.diff > 0
                used.append(cell)
            details.append(entry)
        n = len(used)
        if n == 0:
            rows.append((g, FamilyTest(0, math.nan, math.nan, "no usable experiment"), None, details, used))
            continue
        rate = binomial_rate_test(int(rises), n, C6_RATE, ci_level=STATS.ci_level)
        rows.append((g, FamilyTest(n, rate.p_above, rate.p_below), rate, details, used))
    tests = [r[1] for r in rows]
    verdicts = family_verdicts(tests, alpha=STATS.alpha, min_n=1)
    bh = _bh(tests, [v.label is not Verdict.INVALID for v in verdicts])
    out = {}
    for (g, test, rate, details, used), verdict, p_bh in zip(rows, verdicts, bh):
        reason = test.invalid_reason if verdict.label is Verdict.INVALID and test.invalid_reason else verdict.reason
        fids = [f.get("spearman") for c in used for f in c.fidelity.values()]
        out[g] = CellResult(
            "C6", claim.name, cell_id("C6", g), verdict.label, rule, reason, None, None, None,
            "diversity", g.token_mode, n=test.n, base_value=C6_RATE, post_value=_num(rate.rate) if rate else None,
            effect=_num(rate.rate - C6_RATE) if rate else None, ci_low=_num(rate.ci_low - C6_RATE) if rate else None,
            ci_high=_num(rate.ci_high - C6_RATE) if rate else None,
            ci_method=f"{rate.ci_method}, shifted by the claimed rate" if rate else None,
            p_value=_num(test.p_claimed), p_holm=_num(verdict.p_adjusted), p_bh=_num(p_bh),
            fidelity=float(min(fids)) if fids else None,
            fidelity_threshold=audit.config.fidelity_threshold,
            funnel=[{"stage": "experiments", "n": len(experiments)}, {"stage": "usable", "n": test.n}],
            extra={**_family_extra(grid, "C6"), "experiments": details,
                   "rises": int(sum(1 for d in details if "skipped" not in d and d["diff"] > 0)),
                   "caveat": rate.caveat if rate else None},
            provenance={"audit_config": audit.config.as_dict(), "metric_config": METRIC_CONFIG.as_dict(),
                        "cache_keys": [c.provenance["cache_keys"] for c in used]})
    return out


# ---------------------------------------------------------------- C8: EAP agrees with exact ablation


def fidelity_family(audit: AuditPipeline, grid: list[GridCell]) -> dict[GridCell, CellResult]:
    """Spearman correlation of EAP scores with exact edge ablation, both models, against the threshold."""
    claim = CLAIMS_BY_ID["C8"]
    threshold = audit.config.fidelity_threshold
    rule = (f"SUPPORTED if, for both models, the Spearman correlation between EAP scores and exact edge "
            f"ablation on {audit.config.fidelity_edges} sampled edges x {audit.config.fidelity_samples} "
            f"questions is >= {threshold}; REFUTED if it is below for either model; INVALID when not measured")
    out = {}
    for g in grid:
        cell = _try_cell(audit, g.pair, g.dataset, g.alpha, g.token_mode)
        if isinstance(cell, SelectionError):
            out[g] = _invalid(audit, "C8", g, "selection left no sample", _funnel_of(cell), rule)
            continue
        ok, worst, _ = gate(audit, [cell])
        label = Verdict.SUPPORTED if ok else Verdict.REFUTED
        fid = cell.fidelity
        causal = audit.causal(cell, "post")
        out[g] = CellResult(
            "C8", claim.name, cell_id("C8", g), label, rule,
            f"smallest Spearman {worst:.3g} {'>=' if ok else '<'} {threshold}", g.pair, g.dataset, g.alpha,
            None, g.token_mode, n=min(int(f.get("samples", 0)) for f in fid.values()),
            base_value=_num(fid["base"].get("spearman")), post_value=_num(fid["post"].get("spearman")),
            effect=_num(worst - threshold), ci_method="none: threshold rule on sampled edges",
            fidelity=_num(worst), fidelity_threshold=threshold, funnel=cell.funnel,
            extra={"family_size": len(grid), "fidelity": _fidelity_extra([cell]), "causal": causal},
            provenance=cell.provenance)
    return out


# ---------------------------------------------------------------- C9: accuracy improved


def accuracy_family(audit: AuditPipeline, grid: list[GridCell]) -> dict[GridCell, CellResult]:
    """Paired accuracy on every generated question: one-sided exact McNemar in each direction."""
    claim = CLAIMS_BY_ID["C9"]
    tests, tables = [], []
    for g in grid:
        answers = audit.answers(g.pair, g.dataset)
        table = accuracy_table(answers.base, answers.post, pair=g.pair, dataset=g.dataset, confidence=STATS.ci_level)
        m = table.fixed + table.broken
        if m == 0:
            tests.append(FamilyTest(table.n, math.nan, math.nan, "no discordant question (accuracy unchanged)"))
        else:
            tests.append(FamilyTest(table.n, float(binom.sf(table.fixed - 1, m, 0.5)),
                                    float(binom.cdf(table.fixed, m, 0.5))))
        tables.append((table, answers))
    verdicts = family_verdicts(tests, alpha=STATS.alpha, min_n=STATS.min_n)
    bh = _bh(tests, [v.label is not Verdict.INVALID for v in verdicts])
    rule = (f"SUPPORTED if the exact one-sided McNemar p for 'post fixes more questions than it breaks' "
            f"(Holm within C9) < {STATS.alpha}; REFUTED if the opposite one-sided p < {STATS.alpha}; INVALID "
            f"with n < {STATS.min_n} or no discordant question; otherwise INCONCLUSIVE")
    out = {}
    for g, test, (table, answers), verdict, p_bh in zip(grid, tests, tables, verdicts, bh):
        diff = table.post.accuracy - table.base.accuracy
        reason = test.invalid_reason if verdict.label is Verdict.INVALID and test.invalid_reason else verdict.reason
        out[g] = CellResult(
            "C9", claim.name, cell_id("C9", g), verdict.label, rule, reason, g.pair, g.dataset, None, "accuracy",
            None, n=table.n, base_value=table.base.accuracy, post_value=table.post.accuracy, effect=diff,
            ci_low=None, ci_high=None, ci_method="Wilson intervals per model in extra",
            p_value=_num(test.p_claimed), p_holm=_num(verdict.p_adjusted), p_bh=_num(p_bh),
            funnel=[{"stage": "questions", "n": table.n}],
            extra={**_family_extra(grid, "C9"), "accuracy": table.to_json()},
            provenance={"models": answers.models, "data": answers.data, "template": answers.template,
                        "decoding": answers.decoding, "audit_config": audit.config.as_dict(),
                        "cache_keys": {"answers": answers.key}})
    return out

