"""Problem sets: GSM8K/MATH JSONL, the `datasets` path (offline, local files), reasoning-gym."""

import json

import pytest

from harness.data.problems import (
    load_hub,
    load_jsonl,
    load_problems,
    load_reasoning_gym,
)
from harness.errors import UserError

GSM8K_ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                 "clips in May. How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 "
               "clips altogether in April and May.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
                 "babysitting. How much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned "
               "0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"},
]
MATH_ROWS = [
    {"problem": "If $x^2+y^2=1$, what is the largest possible value of $|x|+|y|$?",
     "solution": "... so the maximum is $\\boxed{\\sqrt{2}}$.", "unique_id": "test/algebra/1.json"},
    {"problem": "Compute $\\dbinom{8}{4}$.", "solution": "$\\dbinom{8}{4} = \\boxed{70}.$"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gsm8k_jsonl(tmp_path):
    problem_set = load_jsonl(write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS))
    assert [p.gold for p in problem_set.problems] == ["72", "10"]
    assert {p.style for p in problem_set.problems} == {"gsm8k"}
    assert problem_set.problems[0].reference.endswith("#### 72")
    assert problem_set.revision.startswith("sha256:")


def test_a_gsm8k_answer_field_that_is_a_json_number_is_refused_in_one_line(tmp_path):
    """Finding g06: an answer that is a JSON number raised AttributeError ('int' has no 'strip')."""
    with pytest.raises(UserError, match="does not end with '#### N'"):
        load_jsonl(write_jsonl(tmp_path / "int.jsonl", [{"question": "1+1?", "answer": 2}]))


def test_math_jsonl_uses_last_boxed_and_ids(tmp_path):
    problem_set = load_jsonl(write_jsonl(tmp_path / "math.jsonl", MATH_ROWS))
    assert [p.gold for p in problem_set.problems] == ["\\sqrt{2}", "70"]
    assert problem_set.problems[0].id == "test/algebra/1.json"
    assert problem_set.problems[1].id == "1"


def test_revision_follows_file_content(tmp_path):
    first = load_jsonl(write_jsonl(tmp_path / "a.jsonl", GSM8K_ROWS)).revision
    second = load_jsonl(write_jsonl(tmp_path / "a.jsonl", GSM8K_ROWS[:1])).revision
    assert first != second


@pytest.mark.parametrize("row,message", [
    ({"question": "q", "answer": "no marker"}, "####"),
    ({"problem": "p", "solution": "no box"}, "boxed"),
    ({"text": "?"}, "question\\+answer"),
])
def test_bad_rows_are_user_errors(tmp_path, row, message):
    with pytest.raises(UserError, match=message):
        load_jsonl(write_jsonl(tmp_path / "bad.jsonl", [row]))


def test_bad_json_and_duplicate_ids(tmp_path):
    (tmp_path / "broken.jsonl").write_text('{"question": \n')
    with pytest.raises(UserError, match="broken.jsonl:1"):
        load_jsonl(tmp_path / "broken.jsonl")
    with pytest.raises(UserError, match="twice"):
        load_jsonl(write_jsonl(tmp_path / "dup.jsonl", [MATH_ROWS[0], MATH_ROWS[0]]))
    with pytest.raises(UserError, match="does not exist"):
        load_jsonl(tmp_path / "missing.jsonl")


def test_datasets_library_path_offline(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", GSM8K_ROWS)
    problem_set = load_hub("json", data_files=str(data), split="train",
                           cache_dir=str(tmp_path / "hf-cache"))
    assert [p.gold for p in problem_set.problems] == ["72", "10"]
    assert problem_set.revision.startswith("fingerprint:")
    pinned = load_hub("json", data_files=str(data), split="train", revision="main",
                      cache_dir=str(tmp_path / "hf-cache"))
    assert pinned.revision == "main"


def test_unreachable_hub_dataset_is_a_user_error(monkeypatch):
    import datasets

    def no_network(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'no-such-org/no-such-dataset' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", no_network)
    with pytest.raises(UserError, match=r"(?s)ConnectionError.*local JSONL"):
        load_hub("no-such-org/no-such-dataset")


def test_reasoning_gym_is_seeded_and_revisioned():
    a = load_reasoning_gym("gsm_symbolic", n=4, seed=5)
    b = load_reasoning_gym("gsm_symbolic", n=4, seed=5)
    c = load_reasoning_gym("gsm_symbolic", n=4, seed=6)
    assert [p.question for p in a.problems] == [p.question for p in b.problems]
    assert [p.question for p in a.problems] != [p.question for p in c.problems]
    assert a.revision.startswith("reasoning-gym==0.1.")
    assert a.provenance()["config"]["seed"] == 5
    assert all(p.reference and p.reference.rstrip().endswith(p.gold) for p in a.problems)


def test_arithmetic_presets_avoid_division():
    for task in ("basic_arithmetic", "chain_sum", "products"):
        for p in load_reasoning_gym(task, n=30, seed=0).problems:
            assert "/" not in p.entry["metadata"]["expression"]
            assert int(p.gold) == eval(p.entry["metadata"]["expression"])  # the gold is right


def test_load_problems_routes_specs(tmp_path):
    data = write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)
    assert len(load_problems(str(data), n=1).problems) == 1
    assert load_problems("rg:chain_sum", n=3, seed=1).name == "reasoning-gym/chain_sum"
    with pytest.raises(UserError, match="neither"):
        load_problems("gsm8k")


def test_a_gsm8k_gold_answer_without_a_number_is_refused(tmp_path):
    """Finding c02: '#### abc' was accepted as a gold answer and every answer graded wrong."""
    with pytest.raises(UserError, match="holds no number"):
        load_jsonl(write_jsonl(tmp_path / "abc.jsonl", [{"question": "1+1?", "answer": "#### abc"}]))
