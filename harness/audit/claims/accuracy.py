"""C9: post-training improved task accuracy: one-sided exact McNemar on every answered question of
each (pair, dataset); Holm runs over C9's family."""

from __future__ import annotations

from harness.analysis.accuracy import accuracy_table, mcnemar_exact
from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.claims.common import (
    STATS,
    FamilyContext,
    FamilyTest,
    GridCell,
    bh_adjusted,
    cell_id,
    family_extra,
    finite,
)
from harness.audit.stages import AuditPipeline
from harness.audit.verdicts import CellResult, Verdict, family_verdicts


def judge(audit: AuditPipeline, claim_id: str, grid: list[GridCell], context: FamilyContext
          ) -> dict[GridCell, CellResult]:
    """Paired accuracy on every generated question: one-sided exact McNemar in each direction."""
    claim = CLAIMS_BY_ID[claim_id]
    tests, tables = [], []
    for g in grid:
        answers = audit.answers(g.pair, g.dataset)
        table = accuracy_table(answers.base, answers.post, pair=g.pair, dataset=g.dataset, confidence=STATS.ci_level)
        m = table.fixed + table.broken
        if m == 0:
            tests.append(FamilyTest(table.n, 1.0, 1.0, no_change=True))   # accuracy unchanged: no change
        else:
            tests.append(FamilyTest(table.n, mcnemar_exact(table.fixed, table.broken, "greater"),
                                    mcnemar_exact(table.fixed, table.broken, "less")))
        tables.append((table, answers))
    decisions = family_verdicts(tests, alpha=STATS.alpha, min_n=STATS.min_n)
    bh = bh_adjusted(tests, decisions)
    rule = (f"SUPPORTED if the exact one-sided McNemar p for 'post fixes more questions than it breaks' "
            f"(Holm within C9) < {STATS.alpha}; REFUTED if the opposite one-sided p < {STATS.alpha}; INVALID "
            f"with n < {STATS.min_n}; otherwise INCONCLUSIVE (no discordant question: no change, INCONCLUSIVE)")
    out = {}
    for g, test, (table, answers), decision, p_bh in zip(grid, tests, tables, decisions, bh):
        diff = table.post.accuracy - table.base.accuracy
        reason = test.invalid_reason if decision.label is Verdict.INVALID and test.invalid_reason else decision.reason
        out[g] = CellResult(
            claim_id, claim.name, cell_id(claim_id, g), decision.label, rule, reason, g.pair, g.dataset, None, "accuracy",
            None, n=table.n, base_value=table.base.accuracy, post_value=table.post.accuracy, effect=diff,
            ci_low=None, ci_high=None, ci_method="Wilson intervals per model in extra",
            p_value=finite(test.p_claimed), p_holm=finite(decision.p_adjusted), p_bh=finite(p_bh),
            funnel=[{"stage": "questions", "n": table.n}],
            extra={**family_extra(grid, claim_id, decision), "accuracy": table.to_json()},
            provenance={"models": answers.models, "data": answers.data, "template": answers.template,
                        "decoding": answers.decoding, "audit_config": audit.config.as_dict(),
                        "cache_keys": {"answers": answers.key}})
    return out
