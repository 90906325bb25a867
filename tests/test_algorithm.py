"""Algorithm-level answers: the training run is the unit, and the seed control decides in either direction.

Planted: run and control cells with known verdicts and effects; a control judged by the real C1 rule on
planted scores, then with its two sides swapped."""

from __future__ import annotations

import numpy as np
import pytest
from test_reachability import METRIC_PLANTS, PlantedRecords, heavy, judge

from harness.audit.algorithm import algorithm_answers, describe_run
from harness.audit.claims.common import GridCell
from harness.audit.verdicts import CellResult, Verdict
from harness.report.matrix import control_summary


def cell(pair: str, verdict: str, effect: float, *, control: bool = False, claim: str = "C1",
         kind: str = "online-rl", half_width: float = 0.05) -> CellResult:
    return CellResult(claim_id=claim, claim_name="intensity", cell_id=f"{claim}-{pair}-d-a030", verdict=Verdict(verdict),
                      rule="r", pair=pair, dataset="d", alpha=0.3, metric="intensity", token_mode="own", n=40,
                      base_value=1.0, effect=effect, ci_low=effect - half_width, ci_high=effect + half_width,
                      extra={"control": "seed"} if control else {},
                      provenance={"pair": {"name": pair, "algorithm_kind": "seed-control" if control else kind}})


RUNS = [cell("grpo", "SUPPORTED", 0.30), cell("grpo-seed1", "SUPPORTED", 0.25), cell("rloo", "SUPPORTED", 0.35)]


@pytest.mark.parametrize("control", ["REFUTED", "SUPPORTED"])
def test_a_decided_control_keeps_supported_runs_from_an_algorithm_level_verdict(control: str) -> None:
    cells = RUNS + [cell("grpo-seeds", control, 0.3 if control == "SUPPORTED" else -0.3, control=True)]
    [answer] = algorithm_answers(cells)
    assert answer.verdict is Verdict.INCONCLUSIVE and answer.reason.startswith("within seed-to-seed variation")
    assert f"grpo-seeds {control}" in answer.reason and "not attributable to the algorithm" in answer.reason
    assert "C1" in control_summary(cells).split(":")[1]


def test_every_run_supported_and_the_control_undecided_is_supported_with_a_pooled_estimate() -> None:
    [answer] = algorithm_answers(RUNS + [cell("grpo-seeds", "INCONCLUSIVE", 0.01, control=True)])
    assert answer.verdict is Verdict.SUPPORTED and "every one of 3 runs SUPPORTED" in answer.reason
    assert "seed control grpo-seeds INCONCLUSIVE" in answer.reason
    pooled = answer.pooled
    assert pooled["n_runs"] == 3 and pooled["ci"][0] < pooled["estimate"] < pooled["ci"][1]
    # equal CIs: the random-effects estimate is the plain mean of the runs' effects
    assert pooled["estimate"] == pytest.approx(0.30)
    assert pooled["tau2"] >= 0 and 0 <= pooled["i2"] <= 1


def test_runs_that_disagree_pool_with_their_spread() -> None:
    """Two runs up, one down, tight CIs: not SUPPORTED, and the between-run variance is large (I^2 near 1)."""
    cells = RUNS[:2] + [cell("rloo", "REFUTED", -0.30)]
    [answer] = algorithm_answers(cells)
    assert answer.verdict is Verdict.INCONCLUSIVE and "not all decided alike" in answer.reason
    assert answer.pooled["i2"] > 0.9 and answer.pooled["tau2"] > 0.05


def test_one_run_is_about_its_checkpoint() -> None:
    [answer] = algorithm_answers([cell("dpo", "REFUTED", -0.2, claim="C9", kind="offline-preference")])
    assert answer.verdict is Verdict.INCONCLUSIVE and answer.reason.startswith("one run:")
    assert "about this checkpoint, not the algorithm" in answer.reason and answer.pooled is None


def test_the_control_does_not_decide_behaviour() -> None:
    """C9 (accuracy) is behaviour: a decided control is listed but does not hold the answer back."""
    runs = [cell(p, "SUPPORTED", 0.1, claim="C9") for p in ("grpo", "rloo")]
    [answer] = algorithm_answers(runs + [cell("grpo-seeds", "REFUTED", -0.1, claim="C9", control=True)])
    assert answer.verdict is Verdict.SUPPORTED and answer.controls[0]["verdict"] == "REFUTED"


def test_swapping_a_controls_sides_flips_its_verdict_and_changes_nothing_else() -> None:
    """The real C1 rule on planted scores: the control (seed 0 on the base side) judged SUPPORTED; the
    same two runs with the sides swapped judged REFUTED, its effect negated. The algorithm-level answer is
    INCONCLUSIVE "within seed-to-seed variation" both ways and differs only in the control's own words."""
    rng = np.random.default_rng(1)
    base = heavy(rng, 4)
    post = METRIC_PLANTS["C1"](rng, base)
    g = GridCell("rl", "d", 0.5, None, "own")
    judged = {name: judge("C1", PlantedRecords({("rl", "d", 0.5): sides}), [g])[g]
              for name, sides in (("as registered", (base, post)), ("swapped", (post, base)))}
    assert judged["as registered"].verdict is Verdict.SUPPORTED and judged["swapped"].verdict is Verdict.REFUTED
    assert judged["swapped"].effect == pytest.approx(-judged["as registered"].effect, rel=1e-6)

    def answer(j):
        control = cell("grpo-seeds", j.verdict.value, j.effect, control=True)
        return algorithm_answers(RUNS + [control])[0]

    one, other = answer(judged["as registered"]), answer(judged["swapped"])
    assert one.verdict is other.verdict is Verdict.INCONCLUSIVE
    assert one.runs == other.runs and one.pooled == other.pooled
    assert one.reason.replace(describe_run(one.controls[0]), "CONTROL") == \
        other.reason.replace(describe_run(other.controls[0]), "CONTROL")
    assert describe_run(one.controls[0]).startswith("grpo-seeds SUPPORTED (+")
    assert describe_run(other.controls[0]).startswith("grpo-seeds REFUTED (-")


def test_runs_that_agree_closer_than_their_cis_pool_between_them() -> None:
    """The bundled GRPO and RLOO intensity changes on chain_sum_2d: -22.3 % and -23.5 %, CIs far wider
    than their gap. tau^2 is 0 and the pooled change lies between the two (a DerSimonian-Laird fit without
    truncation gave -47 %, outside both)."""
    runs = [cell("grpo", "INCONCLUSIVE", -0.223, half_width=0.204), cell("rloo", "INCONCLUSIVE", -0.235, half_width=0.137)]
    pooled = algorithm_answers(runs)[0].pooled
    assert pooled["tau2"] == 0 and -0.235 <= pooled["estimate"] <= -0.223
    assert pooled["ci"][0] < -0.235 and pooled["ci"][1] > -0.223


@pytest.mark.parametrize("every, identical", [(2, 0.5), (4, 0.75)])
def test_every_metric_cell_says_how_many_analysed_answers_are_identical(every: int, identical: float) -> None:
    """Planted: every `every`-th post answer differs from the base's token for token, correctness the same.
    The C1 cell records that share of identical answers and no change of correctness."""
    rng = np.random.default_rng(1)
    base = heavy(rng, 4)
    records = PlantedRecords({("rl", "d", 0.5): (base, METRIC_PLANTS["C1"](rng, base))})
    records.changed["rl"] = every
    g = GridCell("rl", "d", 0.5, None, "own")
    behaviour = judge("C1", records, [g])[g].extra["behaviour"]
    assert behaviour["n"] == base.shape[0] and base.shape[0] % 4 == 0
    assert behaviour["identical_answers"] == pytest.approx(identical) and behaviour["correctness_changed"] == 0


def test_metric_vs_accuracy_resamples_runs_and_says_whether_the_metric_tracks_behaviour() -> None:
    """Six runs on two datasets each. Planted: the intensity change is 2 x the accuracy change (+ small
    noise): r near 1, its run-cluster CI above 0, "tracks behaviour"; the slope's CI holds 2. With the
    metric change reversed, the CI lies below 0. Seed controls are left out; under 5 runs there is no
    interval (3 runs give a bootstrap 10 distinct resamples)."""
    from harness.audit.behaviour import metric_vs_accuracy

    rng = np.random.default_rng(0)
    cells = []
    for k, pair in enumerate(("a", "b", "c", "d", "e", "f")):
        for dataset in ("d1", "d2"):
            acc = 0.05 * (k - 2.5) + 0.01 * (dataset == "d2")
            cells.append(CellResult(claim_id="C9", claim_name="accuracy", cell_id=f"C9-{pair}-{dataset}",
                                    verdict=Verdict.INCONCLUSIVE, rule="r", pair=pair, dataset=dataset, effect=acc,
                                    provenance={"pair": {"algorithm_kind": "online-rl"}}))
            cells.append(CellResult(claim_id="C1", claim_name="intensity", cell_id=f"C1-{pair}-{dataset}",
                                    verdict=Verdict.INCONCLUSIVE, rule="r", pair=pair, dataset=dataset, alpha=0.3,
                                    metric="intensity", token_mode="own", base_value=2.0,
                                    effect=2.0 * (2 * acc + rng.normal(0, 0.002)),
                                    provenance={"pair": {"algorithm_kind": "online-rl"}}))
    cells.append(CellResult(claim_id="C9", claim_name="accuracy", cell_id="C9-ctl", verdict=Verdict.REFUTED, rule="r",
                            pair="ctl", dataset="d1", effect=0.5, extra={"control": "seed"}))
    [record] = metric_vs_accuracy(cells)
    assert record["n_points"] == 12 and record["n_runs"] == 6 and record["pearson_r"] > 0.99
    assert record["r_ci"][0] > 0 and record["tracks"].startswith("tracks behaviour")
    assert record["slope_ci"][0] < 2 < record["slope_ci"][1]
    cells = [c.replace(effect=-c.effect) if c.claim_id == "C1" else c for c in cells]
    [reversed_] = metric_vs_accuracy(cells)
    assert reversed_["r_ci"][1] < 0 and reversed_["tracks"].startswith("moves against behaviour")
    assert metric_vs_accuracy([c for c in cells if c.pair in ("a", "b", "c")])[0]["tracks"].startswith("cannot tell")


def test_a_seed_only_pair_registered_as_online_rl_is_read_as_a_control_and_mirrors() -> None:
    """GRPO seed 0 -> seed 1 registered as an ordinary online-RL pair (and its mirror, seed 1 -> seed 0):
    their base is another pair's post model, so they are read as controls, never as runs: decided, the
    seed-only pair keeps the answer back beside one real run or three, whichever way round it was
    registered, and the runs' pooled estimate is the same both ways."""
    def with_models(c: CellResult, base: str, post: str) -> CellResult:
        return c.replace(provenance={**c.provenance, "models": {"base": {"fingerprint": base},
                                                               "post": {"fingerprint": post}}})

    grpo = with_models(cell("grpo", "SUPPORTED", 0.3), "sha:base", "sha:s0")
    seed1 = with_models(cell("grpo-seed1", "SUPPORTED", 0.25), "sha:base", "sha:s1")
    rloo = with_models(cell("rloo", "SUPPORTED", 0.35), "sha:base", "sha:r")
    forward = with_models(cell("s0-to-s1", "SUPPORTED", 0.2), "sha:s0", "sha:s1")
    mirror = with_models(cell("s1-to-s0", "REFUTED", -0.2), "sha:s1", "sha:s0")
    [alone] = algorithm_answers([grpo, forward])
    assert alone.verdict is Verdict.INCONCLUSIVE and alone.reason.startswith("within seed-to-seed variation")
    assert [r["pair"] for r in alone.runs] == ["grpo"] and [c["pair"] for c in alone.controls] == ["s0-to-s1"]
    answers = [algorithm_answers([grpo, seed1, rloo, pair])[0] for pair in (forward, mirror)]
    assert all(a.verdict is Verdict.INCONCLUSIVE and "within seed-to-seed variation" in a.reason for a in answers)
    assert answers[0].runs == answers[1].runs and answers[0].pooled == answers[1].pooled
    assert algorithm_answers([grpo, seed1, rloo])[0].verdict is Verdict.SUPPORTED
