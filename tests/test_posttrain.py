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
    assert json.loads(json.dumps({"run": run, **recomputed, "update": held.get("update")})) == table[run]
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
            row("it is 9", False), row("We add. The answer is 2.", True), row("3 + 3 = 6. The answer is 6.", True)]
    post = [row("We add. The answer is 5.", True), row("We add. The answer is 8.", True),
            row("We add. The answer is 9.", True), row("2", False), row("We add. The answer is 6.", True)]
    summary = heldout_summary("grpo", base, post)
    assert summary["base_format"] == 0.8 and summary["post_format"] == 0.8
    assert summary["changed_answers"] == 0.8          # all but the first question's answer changed
    assert (summary["fixed"], summary["broken"]) == (2, 1)
    # both correct: the first (same words) and the last (other words)
    assert (summary["both_correct"], summary["both_correct_changed"]) == (2, 1)
    assert summary["both_correct_changed_share"] == 0.5


def test_update_size_is_the_kl_of_post_from_base_over_the_answer_tokens():
    """Planted: the base is uniform over V tokens, the post puts logit a on token 0 at every position,
    so KL(post || base) = log V - H(post) per token, with H from the closed form; the prompt's own
    positions are not counted."""
    import math
    from types import SimpleNamespace

    import torch

    from harness.training.posttrain import update_size

    vocab, a = 7, 2.0

    def uniform(ids):
        return SimpleNamespace(logits=torch.zeros(1, ids.shape[1], vocab))

    def peaked(ids):
        logits = torch.zeros(1, ids.shape[1], vocab)
        logits[0, 3:, 0] = a          # positions 3.. predict the answer tokens of a 4-token prompt
        return SimpleNamespace(logits=logits)

    z = math.exp(a) + vocab - 1
    p0, rest = math.exp(a) / z, 1 / z
    entropy = -(p0 * math.log(p0) + (vocab - 1) * rest * math.log(rest))
    result = update_size(uniform, peaked, [((1, 2, 3, 4), (5, 6)), ((1, 2, 3, 4), (6, 5, 4))])
    assert result["kl_per_token"] == pytest.approx(math.log(vocab) - entropy, rel=1e-5)
    assert (result["tokens"], result["answers"]) == (5, 2)
    assert update_size(uniform, uniform, [((1, 2), (3,))])["kl_per_token"] == 0.0
    with pytest.raises(UserError, match="no answer tokens"):
        update_size(uniform, peaked, [((1, 2), ())])


def _digit_reward(prompts, completions, **_) -> list[float]:
    """A reward a random tiny model's samples vary on (its exact-answer reward is always 0, which
    would leave the adapter at its initial value and make any resume look exact)."""
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grpo", "dpo"])
def test_a_run_stopped_after_every_step_and_resumed_equals_an_uninterrupted_one(tmp_path, monkeypatch, algo):
    """Sittings of one step each (--max-minutes 0) continue from the saved checkpoint: the adapter,
    and every logged loss and reward, equal the uninterrupted run's bit for bit."""
    import torch
    from safetensors.torch import load_file

    from harness.models.tiny import tiny_model_folder
    from harness.training import posttrain

    monkeypatch.setattr(posttrain, "exact_answer_reward", _digit_reward)
    monkeypatch.setattr(posttrain, "is_correct", lambda text, answer: sum(map(ord, text)) % 2 == 0)   # DPO's pairs
    base = str(tiny_model_folder("llama"))
    config = PostTrainConfig(algo=algo, steps=3, lora_r=4, lora_alpha=8, max_new_tokens=12, train_pool=16,
                             save_every=1, sequences_per_step=8, temperature=1.5)
    posttrain.train(config, tmp_path / "whole", base)
    sittings = 0
    while "stopped_at" in posttrain.train(config, tmp_path / "parts", base, max_minutes=0):
        sittings += 1
    assert sittings == 2
    assert [s["to_step"] for s in json.loads((tmp_path / "parts" / "sittings.json").read_text())] == [1, 2, 3]
    whole, parts = (load_file(tmp_path / run / "adapter" / "adapter_model.safetensors") for run in ("whole", "parts"))
    assert whole.keys() == parts.keys()
    assert all(torch.equal(whole[k], parts[k]) for k in whole)
    assert any(k.endswith("lora_B.weight") and whole[k].abs().max() > 0 for k in whole)   # training moved it

    def numbers(run):   # all but wall times, and DPO's running token count, which TRL keeps per sitting
        rows = json.loads((tmp_path / run / "train_log.json").read_text())
        return [{k: v for k, v in r.items() if "time" not in k and "per_second" not in k and k != "num_tokens"}
                for r in rows]

    assert numbers("whole") == numbers("parts") and len(numbers("whole")) >= 3
    assert not (tmp_path / "parts" / "trainer").exists()   # checkpoints go once the run is complete


def test_a_stopped_run_refuses_other_settings_and_a_finished_one_refuses_a_rerun(tmp_path):
    from harness.training.posttrain import RUN_CONFIG, _check_resumable

    config = PostTrainConfig(algo="grpo", steps=4)
    (tmp_path / RUN_CONFIG).write_text(json.dumps({"config": config.as_json(), "base_ref": "bundled"}))
    assert _check_resumable(config, "bundled", tmp_path) is None   # started, no checkpoint yet
    with pytest.raises(UserError, match="other settings \\(learning_rate\\)"):
        _check_resumable(PostTrainConfig(algo="grpo", steps=4, learning_rate=1e-5), "bundled", tmp_path)
    with pytest.raises(UserError, match="other settings \\(base\\)"):
        _check_resumable(config, "bundled:other", tmp_path)
    (tmp_path / "train_summary.json").write_text("{}")
    with pytest.raises(UserError, match="finished run"):
        _check_resumable(config, "bundled", tmp_path)


def test_screening_keeps_the_problems_in_the_solve_band():
    from harness.training.posttrain import screened

    problems = [{"question": str(i)} for i in range(5)]
    assert screened(problems, [0.0, 0.125, 0.5, 0.875, 1.0], (0.125, 0.875)) == problems[1:4]
    with pytest.raises(UserError, match="widen --solve-band"):
        screened(problems, [0.0, 0.0, 1.0, 1.0, 1.0], (0.125, 0.875))
    with pytest.raises(UserError, match="0 <= low <= high <= 1"):
        PostTrainConfig(algo="grpo", steps=1, solve_band=(0.9, 0.1))
    with pytest.raises(UserError, match="groups of 8"):
        PostTrainConfig(algo="grpo", steps=1, rl_generations=8, sequences_per_step=12)
