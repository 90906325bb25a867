"""Every claim's verdict is reachable: on a synthetic grid of the smallest size the README states, a
planted effect reaches SUPPORTED, its reverse REFUTED, and a null stays INCONCLUSIVE, through each
claim's real rule and the family judge (`harness.audit.claims.family.judge_claim`), from planted records
with no pipeline, model or cache. The grid's cells are planted in the score tensors the rules receive,
so the truth is known by construction.

Smallest grids (README, "Reachable verdicts"), with the default statistics settings:
  C1, C3, C7  n >= 10 questions per cell (min_n; the sign-flip p can reach 2^-n, Holm needs < 0.05 / 2m)
  C2          n >= 10; m <= 49 cells (swap p >= 1 / 2001)
  C4          n >= 10 questions shared by the pairs, one online-RL pair that moves; any m (resamples sized to it)
  C5          2 alpha levels, n >= 10 questions kept at both
  C6          35 base-model x dataset clusters that all rise (the exact interval's lower bound reaches 0.90)
  C8          n >= 10 questions (min_n) in both models' fidelity records and in the causal check
  C9          6 discordant questions in a one-cell family (0.5^6 x 2 < 0.05), n >= 10
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness.audit.claims import get_claim
from harness.audit.claims.common import FamilyContext, GridCell
from harness.audit.claims.family import judge_claim
from harness.audit.config import AuditConfig
from harness.audit.verdicts import Verdict

N = 12
SHAPE = (5, 9)
MASK = torch.from_numpy(np.tril(np.ones(SHAPE, bool), 4))
KINDS = {"rl": "online-rl", "rl2": "online-rl", "dpo": "offline-preference", "odpo": "online-preference"}


def heavy(rng: np.random.Generator, df: float, n: int = N) -> np.ndarray:
    """[n, *SHAPE] scores: a shared pattern plus Student-t(df) noise, a question scale each."""
    pattern = np.random.default_rng(0).normal(size=SHAPE)
    scale = rng.lognormal(0.0, 0.2, (n, 1, 1))
    return scale * (pattern + rng.standard_t(df, (n, *SHAPE)))


class PlantedRecords:
    """A records source (harness.audit.records.Records) serving planted (base, post) score tensors."""

    def __init__(self, cells: dict[tuple[str, str, float], tuple[np.ndarray, np.ndarray]],
                 answers: dict[tuple[str, str], tuple[list[bool], list[bool]]] | None = None) -> None:
        self.config = AuditConfig()
        self.cells, self.answer_table = cells, answers or {}
        self.t_cuts: dict[str, int] = {}        # pair -> T_cut (default 4 for every pair)
        self.changed: dict[str, int] = {}       # pair -> every k-th question's post answer differs (default 2)
        self.template: dict = {}    # pair or (pair, alpha) -> share of its targets that are template (default 0)

    def pair(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, algorithm_kind=KINDS[name])

    def kind(self, name: str) -> str:
        return KINDS[name]

    def cell(self, pair: str, dataset: str, alpha: float, mode: str = "own") -> SimpleNamespace:
        base, post = self.cells[(pair, dataset, alpha)]
        ids = tuple(f"q{i}" for i in range(base.shape[0]))
        every = self.changed.get(pair, 2)

        def scores(w):
            return SimpleNamespace(scores=torch.from_numpy(w.astype(np.float32)), mask=MASK)

        def answers(post: bool):
            return tuple(SimpleNamespace(generation=SimpleNamespace(answer_ids=(7, i + int(post and i % every == 0)))
                                         ) for i in range(len(ids)))

        return SimpleNamespace(
            pair=self.pair(pair), dataset=dataset, alpha=alpha, token_mode=mode, base=scores(base), post=scores(post),
            selection=SimpleNamespace(ids=ids, t_cut=self.t_cuts.get(pair, 4), t_bar=10.0, base=answers(False),
                                      post=answers(True), params=SimpleNamespace(t_cut_from="base",
                                                                                 span_start="after_template"),
                                      span_profile=lambda mode: {side: span_profile(
                                          self.template.get((pair, alpha), self.template.get(pair, 0.0)))
                                                                 for side in ("base", "post")}),
            n=len(ids), funnel=[],
            fidelity={side: {"spearman": 1.0, "ci": [1.0, 1.0], "status": "FAITHFUL"} for side in ("base", "post")},
            provenance={"cache_keys": {"eap_base": pair, "eap_post": pair}}, measured_at=alpha)

    def answers(self, pair: str, dataset: str) -> SimpleNamespace:
        base, post = self.answer_table[(pair, dataset)]

        def checked(outcomes):
            return [SimpleNamespace(problem_id=f"q{i}", correct=c)
                    for i, c in enumerate(outcomes)]

        return SimpleNamespace(base=checked(base), post=checked(post), models={}, data={}, template="t",
                               decoding={}, key="k")


def span_profile(template: float) -> dict:
    """A planted span profile (harness.data.span.profile): `template` of 40 target tokens are template."""
    return {"targets": 40, "template_share": template, "copy_share": 0.0, "template_or_copy_share": template,
            "computational_mean": 4 * (1 - template), "computational_min": 0, "start_mean": 0.0, "template_positions": 4}


def judge(claim_id: str, records: PlantedRecords, grid: list[GridCell], context: FamilyContext = FamilyContext()):
    return judge_claim(get_claim(claim_id), records, grid, context)


def verdicts(results: dict) -> list[Verdict]:
    return [r.verdict for r in results.values()]


# ---------------------------------------------------------------- C1, C2, C3, C7: one metric moves

METRIC_PLANTS = {
    # claim: (post for the planted effect, given base) -- the reverse swaps base and post
    "C1": lambda rng, base: 1.3 * base * (1 + 0.01 * rng.normal(size=base.shape)),
    "C2": lambda rng, base: heavy(rng, 30),
    "C3": lambda rng, base: heavy(rng, 30),
    "C7": lambda rng, base: heavy(rng, 30),
}
BASES = {"C1": lambda rng: heavy(rng, 4), "C2": lambda rng: heavy(rng, 2), "C3": lambda rng: heavy(rng, 2.5),
         "C7": lambda rng: heavy(rng, 1.2)}
DF = {"C1": 4, "C2": 2, "C3": 2.5, "C7": 1.2}


@pytest.mark.parametrize("claim_id", sorted(METRIC_PLANTS))
def test_metric_claims_reach_every_verdict(claim_id: str) -> None:
    rng = np.random.default_rng(1)
    base = BASES[claim_id](rng)
    planted = METRIC_PLANTS[claim_id](rng, base)
    g = GridCell("rl", "d", 0.5, None, "own")
    null = heavy(rng, DF[claim_id])   # another draw from the base's distribution: no systematic change
    outcome = {}
    for name, (b, p) in {"planted": (base, planted), "reverse": (planted, base), "null": (base, null)}.items():
        outcome[name] = verdicts(judge(claim_id, PlantedRecords({("rl", "d", 0.5): (b, p)}), [g]))[0]
    assert outcome == {"planted": Verdict.SUPPORTED, "reverse": Verdict.REFUTED, "null": Verdict.INCONCLUSIVE}


def test_pure_rescaling_supports_c1_and_leaves_c2_c3_c7_without_change() -> None:
    """W_post = 1.3 W_base: intensity rises by 30 %; the per-model-range histogram (C2), kurtosis (C3)
    and node entropy (C7) are scale-free, so their cells are ties: no change."""
    base = heavy(np.random.default_rng(2), 4)
    audit = PlantedRecords({("rl", "d", 0.5): (base, 1.3 * base)})
    g = GridCell("rl", "d", 0.5, None, "own")
    results = {c: judge(c, audit, [g])[g] for c in ("C1", "C2", "C3", "C7")}
    assert results["C1"].verdict is Verdict.SUPPORTED
    assert results["C1"].extra["relative_change"] == pytest.approx(0.3, rel=1e-5)
    for claim_id in ("C2", "C3", "C7"):
        assert results[claim_id].verdict is Verdict.INCONCLUSIVE
        assert results[claim_id].reason.startswith("no change"), results[claim_id].reason


def test_a_significant_effect_smaller_than_the_smallest_effect_of_interest_decides_nothing() -> None:
    """Intensity up by 1 % with tiny noise: tested against the null shifted by the 5 % margin, its p is 1,
    and the interval lies inside the margin: no meaningful change. With the margin set to 0.5 % the same
    data are SUPPORTED."""
    rng = np.random.default_rng(3)
    base = heavy(rng, 4)
    post = 1.01 * base * (1 + 1e-4 * rng.normal(size=base.shape))
    g = GridCell("rl", "d", 0.5, None, "own")
    audit = PlantedRecords({("rl", "d", 0.5): (base, post)})
    cell = judge("C1", audit, [g])[g]
    assert cell.verdict is Verdict.INCONCLUSIVE and cell.p_value > 0.5
    assert cell.reason.startswith("no meaningful change") and cell.extra["equivalent"]
    audit.config = audit.config.with_settings({"stats.sesoi_rel": "0.005"})
    assert judge("C1", audit, [g])[g].verdict is Verdict.SUPPORTED


def test_each_metric_is_judged_against_its_own_margin() -> None:
    """Kurtosis falls by about 30 % of |base| at the interval's near end: SUPPORTED under its 10 % margin, not
    under a 50 % kurtosis margin; intensity's margin (stats.sesoi_rel) plays no part in C3, and the rule
    prints the kurtosis margin's reason (the paper's smallest online-RL fall)."""
    rng = np.random.default_rng(1)
    base, post = heavy(rng, 2.5), heavy(rng, 30)
    g = GridCell("rl", "d", 0.5, None, "own")
    audit = PlantedRecords({("rl", "d", 0.5): (base, post)})
    cell = judge("C3", audit, [g])[g]
    assert cell.verdict is Verdict.SUPPORTED and "0.1 x |base|" in cell.reason
    assert "stats.sesoi_kurtosis" in cell.rule and "Mistral -20.9 %" in cell.rule
    audit.config = AuditConfig().with_settings({"stats.sesoi_rel": "0.5"})
    assert judge("C3", audit, [g])[g].verdict is Verdict.SUPPORTED
    audit.config = AuditConfig().with_settings({"stats.sesoi_kurtosis": "0.5"})
    assert judge("C3", audit, [g])[g].verdict is Verdict.INCONCLUSIVE


def test_differences_below_numerical_precision_are_ties() -> None:
    """A post model whose scores equal the base's within float32 rounding (1e-6 relative) decides
    nothing in any metric claim, although the rounding is consistent in sign."""
    base = heavy(np.random.default_rng(4), 4)
    post = base * (1 + 1e-6)
    g = GridCell("rl", "d", 0.5, None, "own")
    for claim_id in ("C1", "C2", "C3", "C7"):
        cell = judge(claim_id, PlantedRecords({("rl", "d", 0.5): (base, post)}), [g])[g]
        assert cell.verdict is Verdict.INCONCLUSIVE and cell.reason.startswith("no change"), (claim_id, cell.reason)


def test_an_unreachable_grid_says_so_with_its_numbers() -> None:
    """With 30 sign flips the smallest p is 1/31: Holm over 2 hypotheses cannot pass 0.05 / 2."""
    rng = np.random.default_rng(5)
    base = heavy(rng, 4)
    audit = PlantedRecords({("rl", "d", 0.5): (base, 1.5 * base)})
    audit.config = audit.config.with_settings({"stats.n_perm": "30"})
    cell = judge("C1", audit, [GridCell("rl", "d", 0.5, None, "own")])[GridCell("rl", "d", 0.5, None, "own")]
    assert cell.verdict is Verdict.INCONCLUSIVE and not cell.extra["reachable"]
    assert "unreachable on this grid" in cell.reason and "0.0323" in cell.reason


@pytest.mark.parametrize("claim_id", ["C1", "C2", "C3", "C7"])
def test_a_planted_effect_on_the_answers_template_gets_no_directional_verdict(claim_id: str) -> None:
    """The same planted effect that is SUPPORTED on computational targets is INVALID when 60 % of the
    targets are the answer's template, and the cell says so with the share and the limit."""
    rng = np.random.default_rng(1)
    base = BASES[claim_id](rng)
    audit = PlantedRecords({("rl", "d", 0.5): (base, METRIC_PLANTS[claim_id](rng, base))})
    g = GridCell("rl", "d", 0.5, None, "own")
    assert judge(claim_id, audit, [g])[g].verdict is Verdict.SUPPORTED
    audit.template = {"rl": 0.6}
    cell = judge(claim_id, audit, [g])[g]
    assert cell.verdict is Verdict.INVALID
    assert cell.reason.startswith("the targets are the answer's template: 60% of the base model's target tokens")
    assert "template_limit 50%" in cell.reason and cell.extra["span"]["base"]["template_or_copy_share"] == 0.6
    audit.config = AuditConfig().with_settings({"template_limit": "0.7"})
    assert judge(claim_id, audit, [g])[g].verdict is Verdict.SUPPORTED


def test_template_targets_leave_c4_c5_c6_cells_out() -> None:
    """C4: the compared pair on template targets is INVALID, an online-RL pair on them is left out; C5:
    a level on template targets is left out of the trend; C6: such an experiment is not usable."""
    rng = np.random.default_rng(6)
    base = heavy(rng, 4)
    cells = {("rl", "d", 0.5): (base, 1.3 * base), ("rl2", "d", 0.5): (base, 1.3 * base),
             ("dpo", "d", 0.5): (base, base)}
    audit = PlantedRecords(cells)
    g = GridCell("dpo", "d", 0.5, "intensity", "own")
    context = FamilyContext(rl_pairs=("rl", "rl2"))
    audit.template = {"rl2": 0.9}
    cell = judge("C4", audit, [g], context)[g]
    assert cell.verdict is Verdict.SUPPORTED and cell.extra["left_out_template"] == ["rl2"]
    assert cell.extra["compared_with"] == ["rl"]
    audit.template = {"dpo": 0.9}
    assert judge("C4", audit, [g], context)[g].verdict is Verdict.INVALID
    fade = PlantedRecords({("rl", "d", a): (base, k * base) for a, k in ((0.03, 0.8), (0.1, 0.9), (0.5, 1.3))})
    fade.template = {("rl", 0.03): 0.9}
    g5 = GridCell("rl", "d", None, "intensity", "own")
    c5 = judge("C5", fade, [g5], FamilyContext(alphas=(0.03, 0.1, 0.5)))[g5]
    assert c5.extra["alphas"] == [0.1, 0.5] and list(c5.extra["template_alphas"]) == [0.03]
    experiments = tuple(("rl", f"d{k}", 0.5) for k in range(3))
    six = PlantedRecords({e: (base, base + rng.normal(size=base.shape)) for e in experiments})
    six.template = {"rl": 0.0}
    g6 = GridCell(None, None, None, "diversity", "own")
    usable = judge("C6", six, [g6], FamilyContext(rl_pairs=("rl",), experiments=experiments))[g6]
    assert usable.n == 3
    six.template = {"rl": 0.9}
    c6 = judge("C6", six, [g6], FamilyContext(rl_pairs=("rl",), experiments=experiments))[g6]
    assert c6.verdict is Verdict.INVALID
    assert all(x["skipped"].startswith("the targets are the answer's template") for x in c6.extra["experiments"])


# ---------------------------------------------------------------- C4: magnitudes against online RL

def _c4(rl_gain: float, pref_gain: float, online: bool, seed: int = 6, t_cuts: dict | None = None):
    """C4's cell of a preference pair against one online-RL pair: post = base x gain, 1 % noise; the
    preference pair changed every answer, the online-RL pair every second one."""
    rng = np.random.default_rng(seed)
    base = heavy(rng, 4)
    noise = lambda: 1 + 0.01 * rng.normal(size=base.shape)  # noqa: E731
    pref = "odpo" if online else "dpo"
    audit = PlantedRecords({("rl", "d", 0.5): (base, rl_gain * base * noise()),
                            (pref, "d", 0.5): (base, pref_gain * base * noise())})
    audit.changed, audit.t_cuts = {pref: 1}, t_cuts or {}
    g = GridCell(pref, "d", 0.5, "intensity", "own")
    return judge("C4", audit, [g], FamilyContext(rl_pairs=("rl",)))[g]


@pytest.mark.parametrize("rl_gain, dpo_gain, expected, outcome", [
    (1.3, 1.0, Verdict.SUPPORTED, "weaker than online RL"),   # online RL rises, DPO does not move
    (1.3, 0.7, Verdict.SUPPORTED, "inconsistent"),            # DPO moves against online RL: counted for the claim
    (1.3, 1.9, Verdict.REFUTED, "stronger than online RL"),
    (1.3, 1.3, Verdict.INCONCLUSIVE, None),                   # the same change: not weaker
    (0.85, 1.0, Verdict.INCONCLUSIVE, None),                  # online RL falls: nothing to compare with
    (0.85, 0.6, Verdict.INCONCLUSIVE, None),                  # DPO falls 2.7x more than online RL: not "weaker"
])
def test_c4_compares_magnitudes_in_the_claimed_direction(rl_gain, dpo_gain, expected, outcome) -> None:
    cell = _c4(rl_gain, dpo_gain, online=False)
    assert cell.verdict is expected, cell.reason
    assert cell.extra.get("outcome") == outcome
    assert cell.extra["relative_change_rl"] == pytest.approx(rl_gain - 1, abs=0.02)
    if rl_gain < 1:
        assert cell.reason.startswith("online RL does not move in the claimed direction here")


@pytest.mark.parametrize("rl_gain, odpo_gain, expected", [
    (1.3, 1.3, Verdict.SUPPORTED),      # online DPO moves like online RL, within the margin
    (1.0, 1.0, Verdict.INCONCLUSIVE),   # nothing moved: not "like"
    (0.85, 1.0, Verdict.INCONCLUSIVE),  # online RL falls, online DPO does not move: not "like"
    (1.1, 1.6, Verdict.REFUTED),        # six times stronger: not "like"
    (1.3, 1.0, Verdict.REFUTED),        # online DPO does not move although online RL does
])
def test_online_dpo_moves_like_online_rl_only_within_the_margin(rl_gain, odpo_gain, expected) -> None:
    cell = _c4(rl_gain, odpo_gain, online=True)
    assert cell.verdict is expected, cell.reason
    if expected is Verdict.SUPPORTED:
        assert cell.reason.startswith("moves like online RL")


def test_c4_compares_pairs_on_the_questions_both_kept() -> None:
    """Like with like: a preference pair that kept other questions as well is compared on the shared ones."""
    rng = np.random.default_rng(6)
    base = heavy(rng, 4, n=N + 6)
    audit = PlantedRecords({("rl", "d", 0.5): (base[:N], 1.3 * base[:N]), ("dpo", "d", 0.5): (base, base)})
    g = GridCell("dpo", "d", 0.5, "intensity", "own")
    cell = judge("C4", audit, [g], FamilyContext(rl_pairs=("rl",)))[g]
    assert cell.extra["n_shared"] == N and cell.extra["n_each"] == [N + 6, N] and cell.n == N


def test_c4_reports_each_pairs_update_size_and_a_t_cut_that_differs() -> None:
    """Each compared pair's share of changed answers on the shared questions (planted: DPO every answer,
    online RL every second) and its change per unit of it; pairs cut at different T_cut are said to be
    read on unlike spans."""
    cell = _c4(1.3, 1.0, online=False)
    lw = cell.extra["like_with_like"]
    assert lw["same_t_cut"] and "T_cut differs" not in cell.reason
    assert lw["pairs"]["dpo"]["answers_changed"] == 1.0 and lw["pairs"]["rl"]["answers_changed"] == 0.5
    rl = lw["pairs"]["rl"]
    assert rl["change_per_unit_update"] == pytest.approx(rl["relative_change"] / 0.5)
    assert rl["relative_change"] == pytest.approx(cell.extra["relative_change_rl"])
    unlike = _c4(1.3, 1.0, online=False, t_cuts={"rl": 9})
    assert not unlike.extra["like_with_like"]["same_t_cut"]
    assert "T_cut differs across the compared pairs (dpo 4, rl 9 tokens)" in unlike.reason


# ---------------------------------------------------------------- C5: the change moves toward the claim with alpha

@pytest.mark.parametrize("gains, expected", [
    ((0.8, 1.3), Verdict.SUPPORTED),         # a counter-example at small alpha, a rise at large alpha: it fades
    ((1.3, 0.8), Verdict.REFUTED),           # the counter-example appears as alpha grows
    ((1.3, 1.3), Verdict.INCONCLUSIVE),      # no counter-example anywhere
    ((1.3, 1.1), Verdict.INCONCLUSIVE),      # a rise that weakens, with no counter-example: nothing to fade
    ((0.7, 0.9, 1.1, 1.3), Verdict.SUPPORTED),   # the trend over all four levels
    ((0.8, 1.3, 1.3, 0.8), Verdict.INCONCLUSIVE),  # counter-examples at both ends: no trend
])
def test_c5_tests_counter_examples_over_every_alpha(gains, expected) -> None:
    rng = np.random.default_rng(7)
    alphas = (0.03, 0.1, 0.3, 0.5)[:len(gains)] if len(gains) > 2 else (0.1, 0.5)
    cells = {}
    for a, gain in zip(alphas, gains):
        base = heavy(rng, 4)
        cells[("rl", "d", a)] = (base, gain * base * (1 + 0.01 * rng.normal(size=base.shape)))
    g = GridCell("rl", "d", None, "intensity", "own")
    cell = judge("C5", PlantedRecords(cells), [g], FamilyContext(alphas=alphas))[g]
    assert cell.verdict is expected, cell.reason
    assert cell.extra["counter_example_alphas"] == [a for a, gain in zip(alphas, gains) if gain < 1]
    if not cell.extra["counter_example_alphas"]:
        assert cell.reason.startswith("no counter-example to fade")


# ---------------------------------------------------------------- C6: the share of experiments

class DiversityRecords(PlantedRecords):
    """Online-RL pairs of any name; `bases` names a pair's base model (unknown: its own)."""

    def __init__(self, cells: dict, bases: dict[str, str] | None = None) -> None:
        super().__init__(cells)
        self.bases = bases or {}

    def pair(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, algorithm_kind="online-rl", base=self.bases.get(name))

    def kind(self, name: str) -> str:
        return "online-rl"


def _diversity(kinds: list[str], datasets: tuple[str, ...] = ("d1",), bases: dict[str, str] | None = None):
    """One experiment per (pair p0, p1, ..., dataset); post's samples share less (rise) or more (fall) of a
    common pattern than base's, or the same (null), or base with 0.2 % noise (tiny)."""
    rng = np.random.default_rng(8)
    pattern = rng.normal(size=SHAPE)
    cells = {}
    for i, kind in enumerate(kinds):
        for dataset in datasets:
            shared = pattern + rng.normal(size=(N, *SHAPE))
            diverse = 0.2 * pattern + rng.normal(size=(N, *SHAPE))
            cells[(f"p{i}", dataset, 0.5)] = {"rise": (shared, diverse), "fall": (diverse, shared), "null": (shared, shared),
                                              "tiny": (shared, shared * (1 + 0.002 * rng.normal(size=shared.shape)))}[kind]
    g = GridCell(token_mode="own")
    experiments = tuple(cells)
    return judge("C6", DiversityRecords(cells, bases), [g], FamilyContext(experiments=experiments))[g]


def test_c6_is_supported_when_every_one_of_36_independent_experiments_rises() -> None:
    """36 base x dataset clusters that all rise: the exact interval's lower bound, 0.025^(1/36) = 0.90,
    reaches the claimed 95 % minus the 0.05 tolerance (the smallest such grid: 35 clusters)."""
    cell = _diversity(["rise"] * 36)
    assert cell.verdict is Verdict.SUPPORTED, cell.reason
    assert cell.extra["share_rise"]["share"] == 1.0 and cell.extra["paper_share_rise"] == 1.0


@pytest.mark.parametrize("kinds, expected, words", [
    (["rise"] * 7 + ["null"], Verdict.INCONCLUSIVE, "95% not tested"),   # 7 of 8: not the claimed 95 %
    (["rise"] * 8, Verdict.INCONCLUSIVE, "95% not tested"),              # 8 of 8 in 8 clusters: too few to say 95 %
    (["fall"] * 8, Verdict.REFUTED, "credibly fall"),
    (["null"] * 8, Verdict.INCONCLUSIVE, "no change"),
])
def test_c6_decides_the_share_it_claims(kinds, expected, words) -> None:
    cell = _diversity(kinds)
    assert cell.verdict is expected and words in cell.reason, cell.reason


def test_c6_a_change_within_the_margin_is_no_rise() -> None:
    """Experiments whose diversity moves by a fraction of a percent: none counts as a rise; the paper's
    statistic (the share of point-estimate rises) is reported beside it."""
    cell = _diversity(["tiny"] * 8)
    entries = cell.extra["experiments"]
    assert all(abs(x["relative_change"]) < 0.01 and x["outcome"] in ("within margin", "tie") for x in entries)
    assert any(x["outcome"] == "within margin" and x["relative_change"] > 0 for x in entries)
    assert cell.extra["share_rise"]["hits"] == 0 and cell.verdict is not Verdict.SUPPORTED
    assert cell.extra["paper_share_rise"] == np.mean([x["relative_change"] > 0 for x in entries])


def test_c6_clusters_pairs_that_share_a_base_model() -> None:
    """Two pairs trained from one base on one dataset are one cluster (they share its W on most questions):
    one cluster cannot give the share an interval."""
    cell = _diversity(["rise", "rise"], bases={"p0": "sft", "p1": "sft"})
    assert cell.verdict is Verdict.INCONCLUSIVE and "1 base-model x dataset cluster" in cell.reason
    assert {x["cluster"] for x in cell.extra["experiments"]} == {"sft/d1"}


# ---------------------------------------------------------------- C9: accuracy

@pytest.mark.parametrize("fixed, broken, expected", [(8, 0, Verdict.SUPPORTED), (0, 8, Verdict.REFUTED),
                                                     (0, 0, Verdict.INCONCLUSIVE), (4, 4, Verdict.INCONCLUSIVE)])
def test_c9_reaches_every_verdict(fixed: int, broken: int, expected: Verdict) -> None:
    both, neither = 10, 12
    base = [True] * both + [False] * neither + [False] * fixed + [True] * broken
    post = [True] * both + [False] * neither + [True] * fixed + [False] * broken
    g = GridCell("rl", "d")
    cell = judge("C9", PlantedRecords({}, {("rl", "d"): (base, post)}), [g])[g]
    assert cell.verdict is expected, cell.reason


# ---------------------------------------------------------------- C8: fidelity and the causal check

class CausalRecords(PlantedRecords):
    """Cells whose fidelity was measured on `n_fidelity` questions, with a causal check on `n_causal`
    questions where EAP's top k does the share `closes` of the damage of exact's top k (1 nat over a clean
    loss of 2), per question (± 0.1 of it); k random edges do 0.05."""

    def __init__(self, n_fidelity: int, n_causal: int, closes: float, status: str = "FAITHFUL",
                 reversed_change: bool = False, **settings) -> None:
        rng = np.random.default_rng(3)
        base = np.abs(heavy(rng, 4)) * np.linspace(0.1, 10, SHAPE[1])    # levels spread over the edges
        super().__init__({("rl", "d", 0.5): (base, base * np.exp(rng.normal(0, 0.3, SHAPE[1])))})
        self.config = AuditConfig().with_settings(settings)
        self.n_fidelity, self.n_causal, self.closes, self.status = n_fidelity, n_causal, closes, status
        self.reversed_change = reversed_change

    def cell(self, pair, dataset, alpha, mode="own"):
        """Exact deltas equal to the EAP scores on every real edge (the changes faithful), or with the
        post model's change per edge reversed (`reversed_change`: levels still rank alike)."""
        cell = super().cell(pair, dataset, alpha, mode)
        ci = {"FAITHFUL": [0.8, 0.95], "UNFAITHFUL": [-0.6, -0.2]}[self.status]
        edges = np.argwhere(MASK.numpy())
        ids = list(cell.selection.ids[:self.n_fidelity])
        w = {side: getattr(cell, side).scores.numpy()[:self.n_fidelity][:, edges[:, 0], edges[:, 1]].astype(float)
             for side in ("base", "post")}
        exact = {"base": w["base"], "post": w["base"] - (w["post"] - w["base"]) if self.reversed_change else w["post"]}
        cell.fidelity = {side: {"spearman": sum(ci) / 2, "ci": ci, "status": self.status, "samples": self.n_fidelity,
                                "ids": ids, "edges": edges.tolist(), "deltas": exact[side].tolist()}
                         for side in ("base", "post")}
        return cell

    def causal(self, cell, side="post"):
        rng = np.random.default_rng(4)
        clean = rng.normal(2.0, 0.1, self.n_causal)
        exact = np.broadcast_to(clean + 1.0, (3, self.n_causal))
        eap = clean + (self.closes + rng.uniform(-0.1, 0.1, (3, self.n_causal))) * (exact - clean)
        return {"side": side, "samples": self.n_causal, "loss_clean": clean.tolist(),
                "question_loss_eap": eap.tolist(), "question_loss_exact": exact.tolist(),
                "question_loss_random": (exact - 0.95).tolist()}


@pytest.mark.parametrize("n_fidelity, n_causal, closes, status, expected, reason", [
    (12, 12, 0.9, "FAITHFUL", Verdict.SUPPORTED, "causal check SUPPORTED (EAP's top k does 9"),
    (12, 12, 0.9, "UNFAITHFUL", Verdict.REFUTED, "UNFAITHFUL"),
    (12, 12, 0.1, "FAITHFUL", Verdict.REFUTED, "causal check REFUTED (EAP's top k does 1"),
    (12, 12, 0.5, "FAITHFUL", Verdict.INCONCLUSIVE, "causal check INCONCLUSIVE"),
    (1, 1, 0.9, "FAITHFUL", Verdict.INVALID, "fidelity measured on 1 questions (< stats.min_n = 10)"),
    (9, 12, 0.9, "FAITHFUL", Verdict.INVALID, "fidelity measured on 9 questions (< stats.min_n = 10)"),
    (12, 5, 0.9, "FAITHFUL", Verdict.INVALID, "causal check INVALID"),
])
def test_c8_needs_min_n_questions_in_both_parts(n_fidelity, n_causal, closes, status, expected, reason) -> None:
    """The causal check is decided against exact ablation's own top k: EAP's top k that does only 10 % of
    exact's damage is REFUTED, though k random edges do less still; at the 50 % bar, INCONCLUSIVE."""
    g = GridCell("rl", "d", 0.5, None, "own")
    cell = judge("C8", CausalRecords(n_fidelity, n_causal, closes, status), [g])[g]
    assert cell.verdict is expected and reason in cell.reason, cell.reason
    assert "INVALID with fewer than 10 questions (stats.min_n)" in cell.rule


def test_c8_asks_whether_eap_gets_the_changes_right() -> None:
    """Levels FAITHFUL and the causal check significant, but exact ablation moves every edge the other way
    from EAP: C8 is REFUTED on the changes, with their Spearman and sign agreement in the reason."""
    g = GridCell("rl", "d", 0.5, None, "own")
    cell = judge("C8", CausalRecords(12, 12, 0.9, reversed_change=True), [g])[g]
    assert cell.verdict is Verdict.REFUTED and "changes UNFAITHFUL" in cell.reason, cell.reason
    assert cell.extra["difference_fidelity"]["sign_agreement"] == 0.0
    faithful = judge("C8", CausalRecords(12, 12, 0.9), [g])[g]
    assert faithful.verdict is Verdict.SUPPORTED and "changes FAITHFUL" in faithful.reason


def test_c8_minimum_is_the_stats_setting() -> None:
    g = GridCell("rl", "d", 0.5, None, "own")
    cell = judge("C8", CausalRecords(6, 6, 0.9, **{"stats.min_n": "5"}), [g])[g]
    assert cell.verdict is Verdict.SUPPORTED, cell.reason
    assert "fewer than 5 questions (stats.min_n)" in cell.rule


# ---------------------------------------------------------------- every family of every budget can decide

class BudgetRecords(PlantedRecords):
    """Planted records for every (pair, dataset, alpha) of a budget's grid, pairs named as the registry
    names them: post = 1.5 x sign(base) |base|^0.3 (1 % noise) for every pair."""

    def __init__(self, registry, n: int) -> None:
        super().__init__({})
        self.registry, self.n, self.rng = registry, n, np.random.default_rng(12)

    def pair(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, algorithm_kind=self.registry[name].algorithm_kind)

    def kind(self, name: str) -> str:
        return self.registry[name].algorithm_kind

    def cell(self, pair: str, dataset: str, alpha: float, mode: str = "own") -> SimpleNamespace:
        if (pair, dataset, alpha) not in self.cells:
            base = heavy(self.rng, 4, n=self.n)
            lighter = np.sign(base) * np.abs(base) ** 0.3   # lighter tails: every metric moves the claimed way
            self.cells[(pair, dataset, alpha)] = (base, 1.5 * lighter * (1 + 0.01 * self.rng.normal(size=base.shape)))
        return super().cell(pair, dataset, alpha, mode)


@pytest.mark.slow
@pytest.mark.parametrize("budget", ["default", "nightly"])
@pytest.mark.parametrize("claim_id", ["C1", "C2", "C3", "C4", "C7"])
def test_every_family_of_every_budget_can_decide(budget: str, claim_id: str) -> None:
    """On the grid of each entry of AUDIT_BUDGETS, at the budget's questions per cell, the smallest p each
    cell's test can attain passes Holm's first step over its family (no cell is 'unreachable'): the real
    rules on planted records, the real family judge."""
    from harness.audit.grid import RunGrid
    from harness.cli.audit import AUDIT_BUDGETS
    from harness.models.registry import load_registry

    settings = AUDIT_BUDGETS[budget]
    registry = load_registry(None)
    pairs = tuple(settings["pairs"].split(",")) if settings["pairs"] else ()
    grid = RunGrid.build(registry, pairs=pairs, alphas=tuple(float(a) for a in settings["alphas"].split(",")))
    family = grid.family(claim_id)
    records = BudgetRecords(registry, settings["n"])
    cells = judge(claim_id, records, family, grid.context(claim_id))
    assert len(cells) == len(family) > 1
    assert all(c.verdict is not Verdict.INVALID for c in cells.values())
    significance = records.config.stats.significance
    for c in cells.values():
        # C4 splits its cells into two families (offline, online); the others are one family
        size = sum(o.extra.get("contrast") == c.extra.get("contrast") for o in cells.values())
        if "holm_m" in c.extra:   # tested inside the family (a C4 cell whose online RL did not move is not)
            assert c.extra["reachable"] and c.extra["holm_m"] <= 2 * size, (c.cell_id, c.reason)
        if "n_boot" in c.extra:   # C4's resamples are sized for the whole family, every cell tested
            assert 2 * size / (c.extra["n_boot"] + 1) < significance, (c.cell_id, c.extra["n_boot"], size)
    assert sum("holm_m" in c.extra for c in cells.values()) >= len(family) // 2


def test_a_verdict_that_only_the_family_withholds_says_so() -> None:
    """One cell with a clear rise among 11 null cells: alone it is SUPPORTED; in the family of 12 its p no
    longer passes Holm over 24 hypotheses, and the cell says that the family decided."""
    rng = np.random.default_rng(21)
    cells = {}
    for i in range(12):
        base = heavy(rng, 4)
        gain, noise = (1.12, 0.1) if i == 0 else (1.0, 0.05)   # the first: p = 0.0063 alone
        cells[("rl", f"d{i}", 0.5)] = (base, gain * base * (1 + noise * rng.normal(size=(N, 1, 1))))
    grid = [GridCell("rl", f"d{i}", 0.5, None, "own") for i in range(12)]
    audit = PlantedRecords(cells)
    alone = judge("C1", audit, grid[:1])[grid[0]]
    within = judge("C1", audit, grid)[grid[0]]
    assert alone.verdict is Verdict.SUPPORTED and not alone.extra["family_dependent"], alone.reason
    assert within.verdict is Verdict.INCONCLUSIVE and within.extra["family_dependent"], within.reason
    assert "the family decides: alone its p = " in within.reason and "Holm over m = 24 does not" in within.reason
