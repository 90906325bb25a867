"""Selection (both variants) on synthetic lengths with hand-computed survivors; EAP rows."""

import functools
import random

import pytest

from harness.data.generation import Generation
from harness.data.grading import Check, CheckedGeneration
from harness.data.selection import (
    SelectionError,
    SelectionParams,
    build_eap_rows,
    select_samples,
)
from harness.errors import UserError

# the paper's plain cut: these answers are synthetic counting sequences, all one "template"
select = functools.partial(select_samples, span_start="answer")


def checked(qid, answer_len, correct, prompt_len=5, offset=0, reference_len=None):
    """A checked generation with answer tokens offset+0..offset+answer_len-1."""
    gen = Generation(problem_id=qid, prompt="p", prompt_ids=tuple(range(100, 100 + prompt_len)),
                     answer_ids=tuple(range(offset, offset + answer_len)), text="t",
                     finish_reason="eos", model_fingerprint="sha256:x", template="mistral",
                     reference_ids=tuple(range(900, 900 + reference_len)) if reference_len else None)
    return CheckedGeneration(gen, Check(qid, "1", "boxed", "1", correct))


# id: (T_base, T_post, base correct, post correct, base prompt len, post prompt len)
TABLE = {
    "a": (10, 10, True, True, 5, 5),
    "b": (20, 20, True, True, 5, 5),
    "c": (30, 12, True, True, 5, 5),    # fails balance: 18/21 > 0.5
    "d": (4, 4, True, True, 5, 5),      # too short
    "e": (40, 40, True, False, 5, 5),   # not both correct
    "f": (18, 22, True, True, 5, 6),    # prompt lengths differ (code variant drops it)
    "g": (50, 46, True, True, 5, 5),    # too long
}


def pair(table=TABLE):
    base = [checked(k, v[0], v[2], v[4]) for k, v in table.items()]
    post = [checked(k, v[1], v[3], v[5], offset=1000) for k, v in table.items()]
    return base, post


def test_paper_code_variant_survivors_by_hand():
    # both-correct a,b,c,d,f,g; T̄ = min(132/6, 114/6) = 19; window floor(9.5)=9 .. floor(28.5)=28
    # on the pair mean; f dropped for prompt length; d, g outside; c unbalanced -> a, b
    sel = select(*pair(), variant="paper-code", t_cut_from="pair", alpha=0.3)
    assert sorted(sel.ids) == ["a", "b"]
    assert sel.t_bar == pytest.approx(19.0) and sel.t_bar_window == pytest.approx(19.0)
    assert sel.t_cut == 5  # floor(0.3 * 19 = 5.7), not round
    assert [(s.step, s.count) for s in sel.funnel] == [
        ("questions", 7), ("both-correct", 6), ("equal-prompt-length", 5),
        ("length-window", 3), ("balance", 2), ("subsample", 2), ("span", 2)]


def test_paper_variant_survivors_by_hand():
    # T̄ = mean pair mean over a,b,c,d,f,g = 123/6 = 20.5; each model in [10.25, 30.75]:
    # a (10) is out, c (12) out, d, g out -> b, f; T̄_kept = (20 + 20)/2 = 20
    sel = select(*pair(), variant="paper", t_cut_from="pair", alpha=0.3)
    assert sorted(sel.ids) == ["b", "f"]
    assert sel.t_bar_window == pytest.approx(20.5)
    assert sel.t_bar == pytest.approx(20.0)
    assert sel.t_cut == 6
    assert [s.step for s in sel.funnel] == ["questions", "both-correct", "length-window",
                                            "balance", "subsample", "span"]


def test_t_cut_from_the_base_model_is_one_for_every_pair_of_that_base():
    """T̄ from the base's correct answers (a..g but e: 172/7 = 24.57): two pairs of one base whose post
    answers differ cut at one T_cut, and the paper's per-pair T̄ gives each its own."""
    base, post = pair()
    longer = [checked(c.id, c.answer_len + 6, c.correct, 5, offset=1000) for c in post]
    sel, sel_longer = (select(base, p, variant="paper-code", alpha=0.3) for p in (post, longer))
    assert sel.t_bar == sel_longer.t_bar == pytest.approx(172 / 7) and sel.t_cut == sel_longer.t_cut == 7
    assert sel.to_json()["t_cut_from"] == "base"
    paper = [select(base, p, variant="paper-code", alpha=0.3, t_cut_from="pair").t_cut for p in (post, longer)]
    assert paper[0] != paper[1]
    with pytest.raises(UserError, match="t_cut_from must be one of base, pair"):
        SelectionParams(t_cut_from="post")


@pytest.mark.parametrize("alpha,t_cut", [(0.03, 1), (0.1, 1), (0.3, 5), (0.5, 9)])
def test_t_cut_is_floor_with_minimum_one(alpha, t_cut):
    assert select(*pair(), variant="paper-code", t_cut_from="pair", alpha=alpha).t_cut == t_cut


def test_t_cut_beyond_answers_is_an_error_with_funnel():
    with pytest.raises(SelectionError) as err:  # T_cut 11 > answer a (10)
        select(*pair(), variant="paper-code", t_cut_from="pair", alpha=0.6, short_answers="error")
    message = str(err.value)
    assert "T_cut" in message and "11" in message and "both-correct" in message
    assert err.value.funnel[-1].step == "span" and "T_cut = max(floor(0.6·19.00), 1) = 11" in err.value.funnel[-1].rule


def test_short_answers_can_be_dropped_instead():
    sel = select(*pair(), variant="paper-code", t_cut_from="pair", alpha=0.6, short_answers="drop")
    assert sel.ids == ("b",) and sel.t_cut == 11
    assert sel.funnel[-1].step == "long-enough" and sel.funnel[-1].count == 1


def test_subsample_matches_the_paper_code_random_sample():
    table = {f"q{i}": (20, 20, True, True, 5, 5) for i in range(50)}
    sel = select(*pair(table), variant="paper-code", alpha=0.1, n=10, seed=42, subsample="paper")
    random.seed(42)
    assert list(sel.ids) == random.sample(list(table), 10)
    assert select(*pair(table), variant="paper-code", alpha=0.1, n=10, seed=7, subsample="paper").ids != sel.ids
    assert len(set(sel.ids)) == 10 and sel.funnel[-1].count == 10


def test_the_shared_subsample_keeps_pairs_on_overlapping_questions():
    """Two pairs of one base keep 160 of 200 questions each, 120 in common (q40-q159), and draw n = 40:
    the shared order draws about 30 common questions for both (C4 compares on them), random.sample about 7."""
    def table(lo, hi):
        return {f"q{i}": (20, 20, True, lo <= i < hi, 5, 5) for i in range(200)}

    def overlap(subsample):
        a, b = (set(select(*pair(table(lo, hi)), variant="paper-code", alpha=0.1, n=40, subsample=subsample).ids)
                for lo, hi in ((0, 160), (40, 200)))
        return len(a & b)

    assert overlap("shared") >= 30 and overlap("paper") <= 10   # expected: about 30 against 40 x 40 x 120 / 160² = 7.5


def test_empty_dataset_is_a_clear_error():
    with pytest.raises(SelectionError, match="no question was answered by both") as err:
        select([], [], variant="paper")
    assert "questions" in str(err.value)


def test_no_both_correct_is_a_clear_error():
    table = {"x": (10, 10, True, False, 5, 5), "y": (10, 10, False, True, 5, 5)}
    with pytest.raises(SelectionError, match="correctly by both") as err:
        select(*pair(table), variant="paper-code")
    assert [s.count for s in err.value.funnel] == [2, 0]


def test_bad_parameters_are_user_errors():
    with pytest.raises(UserError, match="beta"):
        SelectionParams(beta=2.0, gamma=1.0)
    with pytest.raises(UserError, match="variant"):
        SelectionParams(variant="eqs")
    with pytest.raises(UserError, match="alpha"):
        SelectionParams(alpha=0)
    with pytest.raises(UserError, match="short_answers must be one of slice, drop, error"):
        SelectionParams(short_answers="keep")


def test_shared_token_modes_feed_both_models_identical_ids():
    sel = select(*pair(), variant="paper-code", t_cut_from="pair", alpha=0.3)
    for mode, offset in (("shared-base", 0), ("shared-post", 1000)):
        base_rows, post_rows = build_eap_rows(sel, mode)
        assert base_rows == post_rows
        assert all(r["target_ids"] == list(range(offset, offset + 5)) for r in base_rows)
    own_base, own_post = build_eap_rows(sel, "own")
    assert [r["target_ids"][0] for r in own_base] == [0, 0]
    assert [r["target_ids"][0] for r in own_post] == [1000, 1000]
    assert all(len(r["target_ids"]) == sel.t_cut for r in own_base + own_post)
    assert set(own_base[0]) == {"id", "prompt_ids", "target_ids"}


def test_shared_mode_refuses_different_prompts():
    table = {"b": TABLE["b"], "f": TABLE["f"]}
    sel = select(*pair(table), variant="paper", alpha=0.1)
    assert "f" in sel.ids
    with pytest.raises(UserError, match="same prompt"):
        build_eap_rows(sel, "shared-base")


def test_reference_mode_uses_reference_tokens():
    base = [checked("a", 20, True, reference_len=30), checked("b", 20, True, reference_len=3)]
    post = [checked("a", 20, True, offset=1000, reference_len=30),
            checked("b", 20, True, offset=1000, reference_len=3)]
    sel = select(base, post, variant="paper-code", alpha=0.3)
    base_rows, post_rows = build_eap_rows(sel, "reference")
    lengths = {r["id"]: len(r["target_ids"]) for r in base_rows}
    assert lengths == {"a": sel.t_cut, "b": 3}
    assert base_rows[0]["target_ids"][0] == 900
    with pytest.raises(UserError, match="reference solution"):
        build_eap_rows(select(*pair(), variant="paper-code", alpha=0.3), "reference")


def test_selection_json_names_variant_and_funnel():
    data = select(*pair(), variant="paper", alpha=0.1).to_json()
    assert data["variant"] == "paper" and data["params"]["alpha"] == 0.1
    assert data["funnel"][1] == {"step": "both-correct", "count": 6, "rule": "both final answers correct"}
    assert data["answer_lengths"]["f"] == [18, 22]


# Varied lengths, all both-correct, equal prompts, balanced: T̄ = min(mean base, mean post) = 20
VARIED = {f"v{i}": (t, t + (1 if i % 2 else 0), True, True, 5, 5)
          for i, t in enumerate([12, 14, 16, 18, 20, 21, 22, 24, 26, 27])}


def test_slice_keeps_the_same_questions_for_every_alpha():
    base, post = pair(VARIED)
    selections = {a: select(base, post, variant="paper-code", alpha=a) for a in (0.1, 0.5, 1.0)}
    assert SelectionParams().short_answers == "slice"
    ids = {a: sel.ids for a, sel in selections.items()}
    assert ids[0.1] == ids[0.5] == ids[1.0] and len(ids[0.1]) == len(VARIED)
    assert [sel.t_cut for sel in selections.values()] == [2, 10, 20]
    full = selections[1.0]  # T_cut 20: v0..v4 (12..20 tokens on one side at least) are short
    assert sorted(full.short_ids) == ["v0", "v1", "v2", "v3"]
    assert full.funnel[-1].step == "short-sliced" and full.funnel[-1].count == len(VARIED)
    assert "slice" in full.funnel[-1].rule
    assert full.to_json()["short_answers"] == "slice" and full.to_json()["short_ids"] == list(full.short_ids)
    assert selections[0.1].short_ids == () and selections[0.1].funnel[-1].step == "span"


def test_slice_row_of_a_short_answer_has_all_its_tokens_as_targets():
    base, post = pair(VARIED)
    sel = select(base, post, variant="paper-code", alpha=1.0)
    base_rows, post_rows = build_eap_rows(sel, "own")
    rows = {r["id"]: r for r in base_rows}
    post_by_id = {r["id"]: r for r in post_rows}
    assert rows["v0"]["target_ids"] == list(range(12))          # answer 12 < T_cut 20: the whole answer
    assert len(post_by_id["v1"]["target_ids"]) == 15           # post answer of v1 is 15 tokens
    assert len(rows["v9"]["target_ids"]) == sel.t_cut == 20    # long answers are cut at T_cut
    assert all(len(r["target_ids"]) == min(sel.t_cut, n) for r, n in
               ((rows[i], VARIED[i][0]) for i in VARIED))


def test_drop_loses_the_short_questions_at_large_alpha():
    base, post = pair(VARIED)
    small = select(base, post, variant="paper-code", alpha=0.1, short_answers="drop")
    large = select(base, post, variant="paper-code", alpha=1.0, short_answers="drop")
    assert len(small.ids) == len(VARIED)
    assert "v0" in small.ids and "v0" not in large.ids
    assert sorted(large.ids) == [f"v{i}" for i in range(4, 10)]
    assert large.funnel[-1].step == "long-enough" and large.short_ids == ()


def test_the_changed_behaviour_variant_keeps_where_behaviour_changed_and_reads_the_posts_answer():
    """questions=changed: kept are the questions the post model answers right and the base model wrongly
    (q2) or with other tokens (q1); not those answered identically (q0), lost by the post (q3) or by both
    (q4). Both models read the post's answer (shared-post); any other token mode is refused."""
    base = [checked("q0", 10, True), checked("q1", 10, True, offset=50), checked("q2", 10, False, offset=7),
            checked("q3", 10, True), checked("q4", 10, False)]
    post = [checked("q0", 10, True), checked("q1", 10, True), checked("q2", 10, True), checked("q3", 10, False),
            checked("q4", 10, False)]
    changed = select(base, post, alpha=0.5, n=10, questions="changed")
    assert set(changed.ids) == {"q1", "q2"} and changed.funnel[1].step == "behaviour-changed"
    assert set(select(base, post, alpha=0.5, n=10).ids) == {"q0", "q1"}
    rows_base, rows_post = build_eap_rows(changed, "shared-post")
    assert rows_base == rows_post and all(r["target_ids"] == list(range(0, 5)) for r in rows_post)
    with pytest.raises(UserError, match="token mode shared-post"):
        build_eap_rows(changed, "own")
