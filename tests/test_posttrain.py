"""Post-training: answer checks, data split, McNemar, the rebuild command on a tiny model, and the
committed held-out accuracy table recomputed from the committed generations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy.stats import binomtest

from harness.cli import main
from harness.errors import UserError
from harness.training.posttrain import (
    ALGORITHM_FIELDS,
    FINAL_SENTENCE,
    HELDOUT_POOL,
    TASKS,
    TRAINED_ALGORITHMS,
    PostTrainConfig,
    exact_answer_reward,
    heldout_rows_of_run,
    heldout_summary,
    is_correct,
    mcnemar_paired,
    task_problems,
)

SMOLLM2 = Path(__file__).resolve().parent.parent / "fixtures" / "smollm2"
RUNS = ("grpo", "grpo-seed1", "rloo", "dpo", "dpo-seed1", "online-dpo")


@pytest.mark.parametrize("text, answer, ok", [
    ("The final answer is 37.", "37", True),
    ("16 + 21 = 37", "37", True),
    ("37, no wait, 38", "37", False),
    ("-12", "-12", True),
    ("12", "-12", False),
    ("no number here", "3", False),
])
def test_is_correct_reads_the_last_number(text, answer, ok):
    assert is_correct(text, answer) is ok


def test_reward_is_exact_answer_per_completion():
    assert exact_answer_reward(["p", "p"], ["so 5", "so 6"], answer=["5", "5"]) == [1.0, 0.0]
    assert exact_answer_reward(["p"], ["1 then 2.5"], answer=["2.5"]) == [1.0]


def test_mcnemar_exact_is_binomial_on_discordant_pairs():
    base = [True] * 4 + [False] * 10 + [True] * 20 + [False] * 66
    post = [False] * 4 + [True] * 10 + [True] * 20 + [False] * 66
    result = mcnemar_paired(base, post)
    assert (result["fixed"], result["broken"]) == (10, 4)
    assert result["p_value"] == pytest.approx(binomtest(10, 14, 0.5).pvalue)
    assert result["p_value"] == pytest.approx(0.1796, abs=1e-3)
    assert mcnemar_paired([True, False], [True, False])["p_value"] == 1.0
    with pytest.raises(UserError):
        mcnemar_paired([True], [True, False])


@pytest.mark.parametrize("task", TASKS)
def test_heldout_problems_are_the_audit_questions_and_never_appear_in_training(task):
    from harness.data.problems import dataset_spec, load_problems

    held = task_problems("heldout", HELDOUT_POOL, task)
    train = task_problems("train", 1000, task)
    assert len({p["question"] for p in held}) == HELDOUT_POOL  # distinct
    assert not {p["question"] for p in held} & {p["question"] for p in train}
    assert task_problems("heldout", 10, task) == held[:10]  # deterministic, nested
    audited = load_problems(dataset_spec(task), n=HELDOUT_POOL, seed=0).problems
    assert [p.question for p in audited] == [p["question"] for p in held]


def test_bad_config_and_split_are_user_errors():
    with pytest.raises(UserError, match="unknown algorithm"):
        PostTrainConfig(algo="ppo-magic", steps=1)
    with pytest.raises(UserError, match="at least 1"):
        PostTrainConfig(algo="grpo", steps=0)
    with pytest.raises(UserError, match="unknown split"):
        task_problems("test", 5, TASKS[0])
    assert main(["posttrain-table", "/nonexistent/run", "--out", "/tmp/x.json"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("algo", TRAINED_ALGORITHMS)
def test_rebuild_command_runs_a_few_steps_on_a_tiny_model(tmp_path, algo):
    from harness.models.tiny import tiny_model_folder

    out = tmp_path / algo
    rc = main(["posttrain", "--algo", algo, "--steps", "2", "--out", str(out), "--lora-r", "4",
               "--base", str(tiny_model_folder("llama")), "--eval-n", "4"])
    assert rc == 0
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "curves.png").stat().st_size > 1000
    log = json.loads((out / "train_log.json").read_text())
    assert max(row["step"] for row in log) == 2
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["config"]["algo"] == algo and summary["config"]["lora_r"] == 4
    assert summary["adapter_dtype"] == "bfloat16"
    held = json.loads((out / "heldout.json").read_text())
    assert len(held["base"]) == len(held["post"]) == 4 * len(TASKS)


@pytest.mark.parametrize("run", RUNS)
def test_committed_accuracy_table_is_recomputed_from_the_committed_answer_fixtures(run):
    """heldout.json regraded from the shipped answers (the audit's grading), and the table row from it."""
    table = {row["run"]: row for row in json.loads((SMOLLM2 / "heldout_accuracy.json").read_text())}
    held = json.loads((SMOLLM2 / run / "heldout.json").read_text())
    regraded = heldout_rows_of_run(SMOLLM2 / "answers", run, TASKS)
    for side in ("base", "post"):
        rows = regraded[side]
        assert rows == held[side]
        per_task = len(rows) // len(TASKS)
        assert [r["question"] for r in rows] == [p["question"] for t in TASKS for p in task_problems("heldout", per_task, t)]
    recomputed = heldout_summary(held["summary"]["algo"], held["base"], held["post"])
    assert json.loads(json.dumps({"run": run, **recomputed})) == table[run]
    assert set(recomputed["by_task"]) == set(TASKS) and recomputed["n"] >= 8 * len(TASKS)   # a verifiable sample per task


def test_committed_runs_share_everything_but_algorithm_and_seed_and_show_a_training_curve():
    configs = {}
    for run in RUNS:
        log = json.loads((SMOLLM2 / run / "train_log.json").read_text())
        summary = json.loads((SMOLLM2 / run / "train_summary.json").read_text())
        assert max(r["step"] for r in log) == summary["config"]["steps"]
        assert (SMOLLM2 / run / "curves.png").stat().st_size > 1000
        key = "reward" if summary["config"]["algo"] in ("grpo", "rloo") else "loss"
        assert sum(key in r for r in log) == summary["config"]["steps"]
        configs[run] = summary["config"]
    shared = [k for k in configs["grpo"] if k not in ("algo", "seed", *ALGORITHM_FIELDS)]
    assert shared and all({k: c[k] for k in shared} == {k: configs["grpo"][k] for k in shared} for c in configs.values())
    for name, users in ALGORITHM_FIELDS.items():   # an algorithm's own settings: the same in each of its runs
        used = {configs[run][name] for run in RUNS if configs[run]["algo"] in users}
        assert len(used) == 1, (name, used)


@pytest.mark.slow
@pytest.mark.parametrize("algo", RUNS)
def test_committed_generations_are_what_the_adapter_produces(algo):
    """Regenerate the first held-out answers with the committed adapter: they match the table's."""
    from harness.models.bundled import bundled_sft_folder
    from harness.training.posttrain import evaluate, load_post_model

    held = json.loads((SMOLLM2 / algo / "heldout.json").read_text())
    model, tokenizer = load_post_model(str(bundled_sft_folder()), SMOLLM2 / algo)
    rows = evaluate(model, tokenizer, task_problems("heldout", 4, TASKS[0]), 128, algo)
    assert [r["completion"] for r in rows] == [r["completion"] for r in held["post"][:4]]


def test_heldout_summary_counts_the_trained_format_and_the_changed_answers():
    def row(text, correct, task="chain_sum_2d"):
        return {"task": task, "completion": text, "tokens": len(text.split()), "correct": correct,
                "format": FINAL_SENTENCE.search(text) is not None}

    base = [row("We add. The answer is 5.", True), row("We add. The answer is 7.", False),
            row("it is 9", False), row("We add. The answer is 2.", True)]
    post = [row("We add. The answer is 5.", True), row("We add. The answer is 8.", True),
            row("We add. The answer is 9.", True), row("2", False)]
    summary = heldout_summary("grpo", base, post)
    assert summary["base_format"] == 0.75 and summary["post_format"] == 0.75
    assert summary["changed_answers"] == 0.75          # all but the first question's answer changed
    assert (summary["fixed"], summary["broken"]) == (2, 1)
