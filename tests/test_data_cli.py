"""`generate` and `select` subcommands: files written, funnel shown on errors."""

import argparse
import json

import pytest

from harness.cli import data as data_cli
from harness.data.generation import Generation, save_generations
from harness.data.grading import Check
from harness.errors import UserError


def parse(argv):
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def write(path, lengths, correct, offset=0):
    gens = [Generation(f"q{i}", "p", (7, 8, 9), tuple(range(offset, offset + n)), "t", "eos",
                       "sha256:x", "mistral", (900, 901)) for i, n in enumerate(lengths)]
    checks = [Check(f"q{i}", "1", "boxed", "1", c) for i, c in enumerate(correct)]
    save_generations(path, gens, checks)


def test_select_writes_eap_rows_and_selection(tmp_path, capsys):
    write(tmp_path / "base.jsonl", [20, 22, 18, 5], [True, True, True, False])
    write(tmp_path / "post.jsonl", [21, 20, 19, 30], [True, True, False, True], offset=500)
    args = parse(["select", "--base", str(tmp_path / "base.jsonl"), "--post", str(tmp_path / "post.jsonl"),
                  "--alpha", "0.3", "--token-mode", "own", "--token-mode", "shared-base",
                  "--span-start", "answer", "--t-cut-from", "pair", "--out", str(tmp_path / "sel")])
    assert args.run(args) == 0
    out = tmp_path / "sel"
    rows = [json.loads(line) for line in (out / "base.jsonl").read_text().splitlines()]
    post_rows = [json.loads(line) for line in (out / "post.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["q0", "q1"]
    selection = json.loads((out / "selection.json").read_text())
    assert selection["variant"] == "paper-code" and selection["t_cut"] == 6  # floor(0.3·20.5)
    assert all(len(r["target_ids"]) == 6 for r in rows + post_rows)
    assert post_rows[0]["target_ids"][0] == 500
    assert (out / "base.shared-base.jsonl").read_text() == (out / "post.shared-base.jsonl").read_text()
    assert selection["accuracy"]["fixed"] == 1 and selection["accuracy"]["broken"] == 1
    assert [s["count"] for s in selection["funnel"]][:2] == [4, 2]
    assert "T_cut=6" in capsys.readouterr().out


def test_select_error_shows_the_funnel(tmp_path):
    write(tmp_path / "base.jsonl", [20, 22], [True, False])
    write(tmp_path / "post.jsonl", [21, 20], [False, True])
    args = parse(["select", "--base", str(tmp_path / "base.jsonl"), "--post", str(tmp_path / "post.jsonl"),
                  "--out", str(tmp_path / "sel")])
    with pytest.raises(UserError, match=r"(?s)correctly by both.*both-correct\s+0"):
        args.run(args)
    assert not (tmp_path / "sel").exists()


def test_select_refuses_unchecked_generations(tmp_path):
    save_generations(tmp_path / "g.jsonl", [Generation("q", "p", (1,), (2,), "t", "eos", "x", "mistral")])
    args = parse(["select", "--base", str(tmp_path / "g.jsonl"), "--post", str(tmp_path / "g.jsonl"),
                  "--out", str(tmp_path / "sel")])
    with pytest.raises(UserError, match="without an answer check"):
        args.run(args)


def test_generate_rejects_unknown_dataset_before_loading_a_model(tmp_path):
    args = parse(["generate", "--model", "/nonexistent", "--dataset", "rg:sudoku",
                  "--out", str(tmp_path / "g.jsonl")])
    with pytest.raises(UserError, match="unknown reasoning-gym task"):
        args.run(args)


def test_check_regrades_saved_generations(tmp_path, capsys):
    from harness.data.problems import load_reasoning_gym

    problems = load_reasoning_gym("chain_sum", n=2, seed=1).problems
    texts = [f"It is {problems[0].gold}", f"\\boxed{{{problems[1].gold}}}"]
    gens = [Generation(p.id, "p", (1,), (2,), t, "eos", "sha256:x", "bare") for p, t in zip(problems, texts)]
    save_generations(tmp_path / "g.jsonl", gens, [Check(p.id, None, "none", p.gold, False) for p in problems])
    for grader, expected in (("auto", [True, True]), ("paper", [False, True])):
        out = tmp_path / f"g.{grader}.jsonl"
        args = parse(["check", "--generations", str(tmp_path / "g.jsonl"), "--dataset", "rg:chain_sum",
                      "--n", "2", "--data-seed", "1", "--grader", grader, "--out", str(out)])
        assert args.run(args) == 0
        checks = [json.loads(line)["check"] for line in out.read_text().splitlines()]
        assert [c["correct"] for c in checks] == expected
        provenance = json.loads((tmp_path / f"g.{grader}.provenance.json").read_text())
        assert provenance["grader"]["setting"] == grader
    assert {c["grader"] for c in checks} == {"paper"}
