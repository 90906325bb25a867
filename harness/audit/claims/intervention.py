"""CB1-CB3: do the edges EAP singles out carry what the models do? Interventions read behaviour.

Behaviour is the log-probability of a correct solution, the problem's reference solution, teacher-forced
through both models (harness.circuit.crossmodel), on the first `behaviour_questions` questions of the
dataset. For each k in `behaviour_ks`, k chosen edges and k random edges matched in magnitude are
intervened on; per question the effect is averaged over k, and a one-sided sign-flip test over
questions (Holm over the claim's cells) asks whether the chosen edges do more than the matched ones:

- CB1 restores: the base's values patched into the post model's k edges of largest |EAP change|
  move the post model toward the base (toward = in the sign of base - post on the same probes);
- CB2 installs: the post's values patched into the base model's same edges move it toward the post;
- CB3 necessary: zero-ablating the post model's k edges of largest |EAP| lowers the correct
  answer's log-probability more than zero-ablating k edges of matched activation size.

The claims speak of pairs whose behaviour changed: where the two models score the correct answer
alike on these probes (no significant difference either way), the cell is INCONCLUSIVE, "no behaviour
change detected", and decides nothing (a model against its own copy lands here).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import bootstrap

from harness.analysis.stats.paired import paired_test
from harness.audit.claims import ClaimSpec
from harness.audit.claims.common import FamilyContext, GridCell, finite
from harness.audit.claims.family import Outcome, measured_cell
from harness.audit.config import AuditConfig
from harness.audit.verdicts import Verdict

PART = {"restores": "restore", "installs": "install", "necessary": "necessity"}
GATE = {"restore": "restore", "install": "install", "necessity": "restore"}


def rule_text(direction: str, cfg: AuditConfig) -> str:
    stats = cfg.stats
    ks = ", ".join(map(str, cfg.behaviour_ks))
    probe = (f"on the first {cfg.behaviour_questions} questions (behaviour_questions), both models teacher-forced on "
             "the question's reference solution; behaviour = log p of that correct solution (nats, summed over its "
             "tokens)")
    chosen = {
        "restore": ("the post model with the base's source values patched into its k edges of largest |EAP change| "
                    "(post - base mean score at the cell's alpha)", "the patch size ||z_post - z_base||",
                    "movement toward the base: (patched - post) x sign(mean(base - post))"),
        "install": ("the base model with the post's source values patched into the k edges of largest |EAP change|",
                    "the patch size ||z_base - z_post||", "movement toward the post: (patched - base) x "
                    "sign(mean(post - base))"),
        "necessity": ("the post model with its k edges of largest |EAP| zero-ablated", "the source's size ||z_post||",
                      "damage: post - ablated"),
    }[PART[direction]]
    return (f"{chosen[0]}, against k random edges matched on {chosen[1]} ({cfg.behaviour_bins} equal-count bins, "
            f"behaviour_seed {cfg.behaviour_seed}), k in {ks} (behaviour_ks), {probe}. Per question, {chosen[2]}, "
            f"averaged over k; one-sided sign-flip test that the chosen edges' exceeds the matched edges', Holm over "
            f"the claim's cells at {stats.significance}. SUPPORTED if significantly more, REFUTED if significantly "
            f"less; INCONCLUSIVE where the two models' behaviour on these probes does not differ (paired sign-flip "
            f"test, either direction, at {stats.significance}: nothing to move); INVALID with fewer than "
            f"{stats.min_n} questions")


def effects(part: dict, name: str) -> np.ndarray:
    """Per k and question [K, n]: the movement toward the donor (restore, install) or the damage
    (necessity) of the `name` ("top" or "matched") edge sets."""
    scores, clean = np.asarray(part[name], dtype=float), np.asarray(part["clean"], dtype=float)
    if part.get("target") is None:
        return clean - scores
    sign = np.sign(np.mean(np.asarray(part["target"], dtype=float) - clean))
    return sign * (scores - clean)


def behaviour_changed(part: dict, config: AuditConfig) -> tuple[bool, str]:
    """Do the recipient and the donor score the correct answer differently on these probes?"""
    stats = config.stats
    clean, target = np.asarray(part["clean"], dtype=float), np.asarray(part["target"], dtype=float)
    test = paired_test(clean, target, +1, n_boot=stats.n_boot, n_perm=stats.n_perm, seed=stats.seed,
                       zero_method=stats.zero_method, ci_level=stats.ci_level)
    p = min(test.p_permutation, test.p_permutation_opposite)
    text = (f"the donor gives the reference solution {test.mean_diff:+.3g} nats of log-probability against the recipient "
            f"({stats.ci_level:.0%} CI [{test.ci_low:.3g}, {test.ci_high:.3g}], sign-flip p = {p:.3g})")
    return bool(p < stats.significance and not test.no_change), text


def curve_rows(part: dict, config: AuditConfig) -> list[dict]:
    """Per k: mean effect of the chosen and the matched edges with percentile bootstrap intervals over
    questions, the hit rate (greedy would give the correct answer), the share of the behaviour gap the
    chosen edges move (restore, install), and their share of the intensity change."""
    stats = config.stats
    top, matched = effects(part, "top"), effects(part, "matched")
    clean = np.asarray(part["clean"], dtype=float)
    gap = (np.mean(np.abs(np.asarray(part["target"], dtype=float) - clean))
           if part.get("target") is not None else None)
    rows = []
    for i, k in enumerate(part["ks"]):
        row = {"k": k, "change_share": part["change_share"][i],
               "top_hit": float(np.mean(part["top_hit"][i])), "matched_hit": float(np.mean(part["matched_hit"][i])),
               "clean_hit": float(np.mean(part["clean_hit"]))}
        for name, values in (("top", top[i]), ("matched", matched[i])):
            row[name] = float(values.mean())
            row[f"{name}_ci"] = _interval(values, stats)
        row["recovered_share"] = float(top[i].mean() / gap) if gap else None
        rows.append(row)
    return rows


def _interval(values: np.ndarray, stats) -> list[float | None]:
    if np.ptp(values) == 0:
        return [float(values[0]), float(values[0])]
    ci = bootstrap((values,), np.mean, n_resamples=stats.n_boot, confidence_level=stats.ci_level,
                   method="percentile", rng=np.random.default_rng(stats.seed)).confidence_interval
    return [finite(ci.low), finite(ci.high)]


def rule(claim: ClaimSpec, records, grid: list[GridCell], context: FamilyContext) -> list[Outcome]:
    """Each cell: the pair's intervention curves at the alpha fidelity is measured at."""
    config = records.config
    stats = config.stats
    part_name = PART[claim.direction]
    text = rule_text(claim.direction, config)
    out = []
    for g in grid:
        cell = measured_cell(records, g, text, "the interventions run where fidelity does "
                             "(fidelity_alpha = {measured_at:g})")
        if isinstance(cell, Outcome):
            out.append(cell)
            continue
        curves = records.interventions(cell)
        part = curves[part_name]
        top, matched = effects(part, "top").mean(0), effects(part, "matched").mean(0)
        test = paired_test(matched, top, +1, n_boot=stats.n_boot, n_perm=stats.n_perm, seed=stats.seed,
                           zero_method=stats.zero_method, ci_level=stats.ci_level)
        changed, gap_text = behaviour_changed(curves[GATE[part_name]], config)
        record = {"part": part_name, "curve": curve_rows(part, config), "behaviour_gap": gap_text,
                  "probes": curves["probes"]}
        fields = {"n": len(top), "base_value": finite(float(matched.mean())), "post_value": finite(float(top.mean())),
                  "effect": finite(test.mean_diff), "ci_low": finite(test.ci_low), "ci_high": finite(test.ci_high),
                  "ci_method": "chosen - matched edges' effect, nats, mean over k, BCa over questions",
                  "funnel": [{"stage": "probed questions", "n": len(top), "rule": "first behaviour_questions answered"}],
                  "provenance": cell.provenance, "extra": {"interventions": record}}
        if not changed:
            out.append(Outcome(g, text, decided=(Verdict.INCONCLUSIVE, f"no behaviour change detected on these probes: {gap_text}; "
                                                 "the claim speaks of pairs whose behaviour changed"), fields=fields))
            continue
        record["test"] = {"p_claimed": finite(test.p_permutation), "p_opposite": finite(test.p_permutation_opposite)}
        out.append(Outcome(g, text, test, fields=fields))
    return out
