"""C9: post-training improved task accuracy: one-sided exact McNemar on every answered question of
each (pair, dataset); Holm runs over C9's family."""

from __future__ import annotations

import numpy as np
from scipy.stats import bootstrap

from harness.analysis.accuracy import accuracy_table, mcnemar_exact
from harness.analysis.stats.config import StatsConfig
from harness.audit.claims import ClaimSpec
from harness.audit.claims.common import FamilyContext, FamilyTest, GridCell, finite
from harness.audit.claims.family import Outcome
from harness.audit.records import PairAnswers, Records
from harness.audit.verdicts import Margin, verdict_rule


def rule(claim: ClaimSpec, records: Records, grid: list[GridCell], context: FamilyContext) -> list[Outcome]:
    """Paired accuracy on every generated question: one-sided exact McNemar in each direction."""
    stats = records.config.stats
    text = (f"{verdict_rule(stats.significance, stats.min_n, f'{stats.ci_level:.0%} interval of the accuracy change')}. "
            "Tested effect: post - base accuracy on every answered question; p: exact one-sided McNemar (binomial "
            "on the discordant questions: fixed vs broken); interval: percentile bootstrap over questions. Smallest "
            f"effect of interest: {stats.sesoi_accuracy:g} accuracy. No discordant question is no change")
    out = []
    for g in grid:
        answers = records.answers(g.pair, g.dataset)
        table = accuracy_table(answers.base, answers.post, pair=g.pair, dataset=g.dataset, confidence=stats.ci_level)
        margin = _margin(answers, stats)
        discordant = table.fixed + table.broken
        if discordant == 0:
            test = FamilyTest(table.n, 1.0, 1.0, no_change=True)   # accuracy unchanged: no change
        else:
            test = FamilyTest(table.n, mcnemar_exact(table.fixed, table.broken, "greater"),
                              mcnemar_exact(table.fixed, table.broken, "less"), min_p=0.5 ** discordant)
        out.append(Outcome(g, text, test, margin, fields={
            "alpha": None, "metric": "accuracy", "token_mode": None, "base_value": table.base.accuracy,
            "post_value": table.post.accuracy, "effect": table.post.accuracy - table.base.accuracy,
            "ci_low": finite(margin.ci_low), "ci_high": finite(margin.ci_high),
            "ci_method": f"percentile bootstrap over questions, {stats.n_boot} resamples (Wilson per model in extra)",
            "funnel": [{"stage": "questions", "n": table.n}], "extra": {"accuracy": table.to_json()},
            "provenance": {"pair": {"name": g.pair, "algorithm_kind": records.kind(g.pair)},
                           "models": answers.models, "data": answers.data, "template": answers.template,
                           "decoding": answers.decoding, "audit_config": records.config.as_dict(),
                           "cache_keys": {"answers": answers.key}}}))
    return out


def _margin(answers: PairAnswers, stats: StatsConfig) -> Margin:
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
