"""C9: post-training improved task accuracy: one-sided exact McNemar on every answered question of
each (pair, dataset); Holm runs over C9's family."""

from __future__ import annotations

import numpy as np
from scipy.stats import bootstrap

from harness.analysis.accuracy import accuracy_table, mcnemar_exact
from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.claims.common import (
    FamilyContext,
    FamilyTest,
    GridCell,
    bh_adjusted,
    cell_id,
    family_extra,
    finite,
)
from harness.audit.stages import AuditPipeline
from harness.audit.verdicts import CellResult, Margin, Verdict, family_verdicts, verdict_rule


def judge(audit: AuditPipeline, claim_id: str, grid: list[GridCell], context: FamilyContext
          ) -> dict[GridCell, CellResult]:
    """Paired accuracy on every generated question: one-sided exact McNemar in each direction."""
    claim = CLAIMS_BY_ID[claim_id]
    stats = audit.config.stats
    tests, tables, margins = [], [], []
    for g in grid:
        answers = audit.answers(g.pair, g.dataset)
        table = accuracy_table(answers.base, answers.post, pair=g.pair, dataset=g.dataset, confidence=stats.ci_level)
        margins.append(_margin(answers, table, stats))
        m = table.fixed + table.broken
        if m == 0:
            tests.append(FamilyTest(table.n, 1.0, 1.0, no_change=True))   # accuracy unchanged: no change
        else:
            tests.append(FamilyTest(table.n, mcnemar_exact(table.fixed, table.broken, "greater"),
                                    mcnemar_exact(table.fixed, table.broken, "less"), min_p=0.5 ** m))
        tables.append((table, answers))
    rule = (f"{verdict_rule(stats.alpha, stats.min_n, f'{stats.ci_level:.0%} interval of the accuracy change')}. "
            "Tested effect: post - base accuracy on every answered question; p: exact one-sided McNemar (binomial "
            "on the discordant questions: fixed vs broken); interval: percentile bootstrap over questions. Smallest "
            f"effect of interest: {stats.sesoi_accuracy:g} accuracy. No discordant question is no change")
    decisions = family_verdicts(tests, alpha=stats.alpha, min_n=stats.min_n, margins=margins, rule=rule)
    bh = bh_adjusted(tests, decisions)
    out = {}
    for g, test, (table, answers), decision, p_bh in zip(grid, tests, tables, decisions, bh):
        diff = table.post.accuracy - table.base.accuracy
        reason = test.invalid_reason if decision.label is Verdict.INVALID and test.invalid_reason else decision.reason
        margin = margins[len(out)]
        out[g] = CellResult(
            claim_id, claim.name, cell_id(claim_id, g), decision.label, rule, reason, g.pair, g.dataset, None, "accuracy",
            None, n=table.n, base_value=table.base.accuracy, post_value=table.post.accuracy, effect=diff,
            ci_low=finite(margin.ci_low), ci_high=finite(margin.ci_high),
            ci_method=f"percentile bootstrap over questions, {stats.n_boot} resamples (Wilson per model in extra)",
            p_value=finite(test.p_claimed), p_holm=finite(decision.p_adjusted), p_bh=finite(p_bh),
            funnel=[{"stage": "questions", "n": table.n}],
            extra={**family_extra(grid, claim_id, decision, stats), "accuracy": table.to_json()},
            provenance={"models": answers.models, "data": answers.data, "template": answers.template,
                        "decoding": answers.decoding, "audit_config": audit.config.as_dict(),
                        "cache_keys": {"answers": answers.key}})
    return out


def _margin(answers, table, stats) -> Margin:
    """Accuracy change post - base with its bootstrap interval, against stats.sesoi_accuracy."""
    diffs = np.array([float(p.correct) - float(b.correct) for b, p in zip(answers.base, answers.post)])
    effect = float(diffs.mean())
    if np.ptp(diffs) == 0:
        low = high = effect
    else:
        ci = bootstrap((diffs,), np.mean, n_resamples=stats.n_boot, confidence_level=stats.ci_level,
                       method="percentile", rng=np.random.default_rng(stats.seed)).confidence_interval
        low, high = float(ci.low), float(ci.high)
    return Margin(effect, low, high, +1, stats.sesoi_accuracy, f"{stats.sesoi_accuracy:g} accuracy")
