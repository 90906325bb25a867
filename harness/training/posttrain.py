"""Controlled post-training from one checkpoint: SFT, GRPO, RLOO, DPO and online DPO with LoRA (TRL + PEFT).

`sft` makes the checkpoint: supervised fine-tuning of SmolLM2-135M-Instruct on worked solutions
(`harness.data.worked`), so that the base of every bundled pair writes its steps before "The answer
is N.", as the paper's SFT bases do. All other runs start from that checkpoint, see prompts from the
same training pool (two reasoning-gym tasks, `TASKS`, interleaved), use the same LoRA shape, learning
rate, optimizer steps and 16 sequences per step, and are rewarded by the same exact-final-answer check
of a reasoning answer (prompt template `chat-reason`: steps, then "The answer is N."). They differ in
algorithm and seed only:

- grpo: online RL (group-relative policy gradient over 4 sampled completions per prompt);
- rloo: online RL with the REINFORCE leave-one-out baseline (4 completions per prompt);
- dpo: offline preferences, sampled once from the base (a correct completion chosen, an incorrect
  one rejected), then a static DPO loss;
- online-dpo: the same DPO loss on pairs sampled from the *current* policy each step and ranked by
  the same reward, which isolates "online vs static data" from "RL objective vs preference loss".
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from harness.data.generation import Decoding, generate_answers
from harness.data.grading import check_answer, check_answers
from harness.data.problems import Problem, reasoning_gym_config
from harness.data.worked import worked_solution
from harness.errors import UserError
from harness.files import atomic_write_json, cache_root, temp_file
from harness.models.loading import LoadedModel, ModelInfo, state_dict_fingerprint
from harness.models.pairs import build_reference
from harness.models.prompts import PromptTemplate, get_template, render_prompt
from harness.models.registry import ONLINE_RL, PREFERENCE_KINDS, SUPERVISED
from harness.versions import library_versions

TRAINED_ALGORITHMS = ("sft", "grpo", "rloo", "dpo", "online-dpo")
ALGORITHM_KIND = {"sft": SUPERVISED, "grpo": ONLINE_RL, "rloo": ONLINE_RL, "dpo": PREFERENCE_KINDS[0],
                  "online-dpo": PREFERENCE_KINDS[1]}
# PostTrainConfig fields read by some algorithms only; every other field is shared by all runs
ALGORITHM_FIELDS = {"beta": ("dpo", "online-dpo"), "rl_generations": ("grpo", "rloo"),
                    "dpo_samples_per_problem": ("dpo",), "dpo_epochs": ("dpo",)}
# the training and held-out tasks: reasoning-gym presets of harness.data.problems, the audit's datasets
TASKS: tuple[str, ...] = ("chain_sum_2d", "arithmetic_2d")
TRAIN_SEED, HELDOUT_SEED = 1000, 0   # held-out = the audit's datasets at its default data_seed (0)
HELDOUT_POOL = 200  # per task: the questions the bundled audit may answer (training draws outside them)
SEQUENCES_PER_STEP = 16


@dataclass(frozen=True)
class PostTrainConfig:
    """Everything that defines one post-training run; written next to the adapter."""

    algo: str
    steps: int
    seed: int = 0
    learning_rate: float = 3e-4
    lora_r: int = 8
    lora_alpha: int = 16
    full_weights: bool = False
    max_new_tokens: int = 128
    temperature: float = 0.8
    beta: float = 0.1                 # DPO / online-DPO KL strength
    rl_generations: int = 4           # completions per prompt (GRPO, RLOO)
    train_pool: int = 1000            # training problems per task
    dpo_samples_per_problem: int = 4  # base samples drawn per problem to find a (correct, wrong) pair
    dpo_epochs: int = 1               # passes over the static pairs; more passes over fewer pairs overfit them
    tasks: tuple[str, ...] = field(default_factory=lambda: TASKS)
    sequences_per_step: int = SEQUENCES_PER_STEP   # completions (RL, SFT) or 2 x pairs (DPO) per optimizer step
    # train only on problems the checkpoint solves within [low, high] of `screen_samples` samples at
    # `temperature` (the groups that carry a gradient); None: every problem of the pool
    solve_band: tuple[float, float] | None = None
    screen_samples: int = 8
    save_every: int = 4               # steps between resumable checkpoints
    curve_every: int = 0              # steps between held-out accuracy points (0: none)
    curve_n: int = 50                 # held-out problems per task at each curve point

    def __post_init__(self):
        if self.algo not in TRAINED_ALGORITHMS:
            raise UserError(f"unknown algorithm {self.algo!r}; choose one of {', '.join(TRAINED_ALGORITHMS)}")
        if self.steps < 1:
            raise UserError(f"--steps must be at least 1, got {self.steps}")
        if self.algo in ("grpo", "rloo") and self.sequences_per_step % self.rl_generations:
            raise UserError(f"{self.sequences_per_step} sequences per step do not split into groups of "
                            f"{self.rl_generations} completions; make it a multiple of --generations")
        if self.solve_band is not None:
            low, high = self.solve_band
            if not 0 <= low <= high <= 1:
                raise UserError(f"--solve-band {low} {high}: give 0 <= low <= high <= 1 (shares of samples solved)")
        if self.save_every < 1 or self.curve_every < 0 or self.curve_n < 1:
            raise UserError("--save-every and --curve-n must be at least 1, --curve-every at least 0")

    def as_json(self) -> dict:
        """The config as written to train_summary.json (tuples as lists)."""
        return json.loads(json.dumps(asdict(self)))


# ---------------------------------------------------------------- base checkpoint


def resolve_base(base: str | None) -> str:
    """The folder or hub id of `base`: `None`, "bundled" or "smollm2" mean SmolLM2-135M-Instruct, a
    `bundled:<name>` reference its built folder, anything else is a path or hub id."""
    return build_reference("bundled:smollm2-135m-instruct" if base in (None, "bundled", "smollm2") else base)


# ---------------------------------------------------------------- data, prompts, answers


def task_problems(split: str, n: int, task: str) -> list[dict]:
    """`n` problems {id, question, answer, task} of one task (a reasoning-gym preset name).

    The held-out split is the audit's own dataset: the first problems of the preset at seed
    HELDOUT_SEED (the audit's default `data_seed`), at most HELDOUT_POOL. The training split is
    drawn with another seed and drops every question of the held-out pool, so no held-out (audited)
    problem is ever seen in training. Training questions may repeat.
    """
    import reasoning_gym

    if split == "heldout":
        if n > HELDOUT_POOL:
            raise UserError(f"at most {HELDOUT_POOL} held-out problems per task exist; asked for {n}")
        return _heldout_pool(task)[:n]
    if split != "train":
        raise UserError(f"unknown split {split!r}; use train or heldout")
    name, config = reasoning_gym_config(task)
    config.pop("distinct", None)
    held = {x["question"] for x in _heldout_pool(task)}
    out = []
    for i, x in enumerate(reasoning_gym.create_dataset(name, size=4 * n, seed=TRAIN_SEED, **config)):
        if x["question"] not in held:
            out.append({"id": f"train-{task}-{i}", "question": x["question"], "answer": str(x["answer"]), "task": task,
                        "expression": x["metadata"]["expression"]})
        if len(out) == n:
            return out
    raise UserError(f"could not draw {n} training problems from {task} outside the held-out pool")


def training_problems(config: "PostTrainConfig") -> list[dict]:
    """The training pool: `train_pool` problems of each task, interleaved (task 1, task 2, ...)."""
    per_task = [task_problems("train", config.train_pool, t) for t in config.tasks]
    return [p for group in zip(*per_task) for p in group]


def heldout_problems(n: int, tasks: tuple[str, ...] = TASKS) -> list[dict]:
    """The first `n` held-out problems of each task, task by task."""
    return [p for t in tasks for p in task_problems("heldout", n, t)]


def _heldout_pool(task: str) -> list[dict]:
    from harness.data.problems import load_reasoning_gym

    problems = load_reasoning_gym(task, n=HELDOUT_POOL, seed=HELDOUT_SEED).problems
    return [{"id": p.id, "question": p.question, "answer": p.gold, "task": task} for p in problems]


def prompt_template(tokenizer) -> PromptTemplate:
    """The audit's prompt of the bundled pairs (chat template), or its plain Q/A form for a
    tokenizer without a chat template."""
    return get_template("chat-reason" if getattr(tokenizer, "chat_template", None) else "qa-reason")


# reasoning-gym problems wrapped as GSM8K-style Problems: the final number of the reasoning is graded
POSTTRAIN_GRADER = "lenient"


def _problem(index: int, question: str, answer: str) -> Problem:
    return Problem(id=f"p{index}", question=question, gold=str(answer), style="gsm8k")


def is_correct(completion: str, answer: str) -> bool:
    """Does the completion's final answer equal `answer`? The audit's own grading (harness.data.grading),
    lenient: "the answer is N", else the last number; the prompts ask for no \\boxed{}, so paper
    grading would score nearly every completion wrong."""
    return check_answer(completion, _problem(0, "", answer), grader=POSTTRAIN_GRADER).correct


def exact_answer_reward(prompts, completions, answer, **_) -> list[float]:
    """TRL reward function: 1.0 when the completion's final number equals the answer."""
    return [float(is_correct(c if isinstance(c, str) else c[-1]["content"], a))
            for c, a in zip(completions, answer)]


def _loaded(model, tokenizer, label: str) -> LoadedModel:
    """A trained or merged model as the audit's LoadedModel (fingerprinted, for the generation cache)."""
    info = ModelInfo(source=label, fingerprint=state_dict_fingerprint(model), model_class=type(model).__name__,
                     dtype=str(next(model.parameters()).dtype).removeprefix("torch."), device=str(model.device))
    return LoadedModel(model=model, tokenizer=tokenizer, info=info)


def build_preference_pairs(model, tokenizer, problems: list[dict], config: PostTrainConfig,
                           n_pairs: int) -> tuple[list[dict], int]:
    """Sample the base; a problem with a correct and a wrong sample gives (chosen, rejected).

    Problems go 16 at a time, their `dpo_samples_per_problem` samples in one batch (one sampling
    seed per chunk). Returns the pairs (at most `n_pairs`) and how many problems it took: up to the one
    that gave the last pair (the rest of that one's chunk was sampled, unused).
    """
    pairs: list[dict] = []
    chunk, draws_per = 16, config.dpo_samples_per_problem
    loaded = _loaded(model, tokenizer, "base")
    template = prompt_template(tokenizer)
    decoding = Decoding(mode="sample", max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                        seed=config.seed, batch_size=chunk * draws_per)
    for start in range(0, len(problems), chunk):
        group = [_problem(start + i, p["question"], p["answer"]) for i, p in enumerate(problems[start:start + chunk])]
        copies = [replace(problem, id=f"{problem.id}#draw{j}") for problem in group for j in range(draws_per)]
        draws = generate_answers(loaded, copies, template, replace(decoding, seed=config.seed + start),
                                 use_cache=False, progress=False)
        for i, problem in enumerate(group):
            texts = [d.text for d in draws[i * draws_per:(i + 1) * draws_per]]
            verdicts = [is_correct(text, problem.gold) for text in texts]
            good = [t for t, ok in zip(texts, verdicts) if ok]
            bad = [t for t, ok in zip(texts, verdicts) if not ok]
            if good and bad:
                pairs.append({"prompt": draws[i * draws_per].prompt, "chosen": good[0], "rejected": bad[0]})
            if len(pairs) == n_pairs:
                return pairs, start + i + 1
    return pairs, len(problems)


# ---------------------------------------------------------------- training


def _common_args(config: PostTrainConfig, out: Path) -> dict:
    return {"output_dir": str(out / CHECKPOINTS), "max_steps": config.steps, "learning_rate": config.learning_rate,
            "seed": config.seed, "data_seed": config.seed, "logging_steps": 1, "save_strategy": "steps",
            "save_steps": config.save_every, "save_total_limit": 2, "save_only_model": False,
            "report_to": [], "use_cpu": not torch.cuda.is_available(), "bf16": False,
            "gradient_checkpointing": False, "gradient_accumulation_steps": 1,
            "lr_scheduler_type": "constant", "warmup_steps": 0, "disable_tqdm": False}


def _peft_config(config: PostTrainConfig):
    if config.full_weights:
        return None
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules="all-linear")


def _load_trainable(base: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return model, tokenizer


# ---------------------------------------------------------------- screening the training pool


def solve_rates(model, tokenizer, base: str, problems: list[dict], config: PostTrainConfig) -> list[float]:
    """Share of `config.screen_samples` samples (at `config.temperature`, seed TRAIN_SEED: the same for
    every run) in which the untrained model solves each problem; cached by base fingerprint, problems
    and sampling settings (every run of a recipe screens the same pool once)."""
    from harness.files import content_key

    draws = config.screen_samples
    key = content_key(_folder_fingerprint(Path(base)), [p["question"] for p in problems], draws,
                      config.temperature, config.max_new_tokens, TRAIN_SEED)
    path = cache_root() / "posttrain-screen" / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())["rates"]
    rows = [_problem(i, p["question"], p["answer"]) for i, p in enumerate(problems)]
    copies = [replace(row, id=f"{row.id}#draw{j}") for row in rows for j in range(draws)]
    decoding = Decoding(mode="sample", max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                        seed=TRAIN_SEED, batch_size=64)
    print(f"screening {len(problems)} training problems: {draws} samples each at temperature {config.temperature}")
    texts = generate_answers(_loaded(model, tokenizer, "base"), copies, prompt_template(tokenizer), decoding,
                             use_cache=False)
    rates = [sum(is_correct(texts[i * draws + j].text, p["answer"]) for j in range(draws)) / draws
             for i, p in enumerate(problems)]
    atomic_write_json(path, {"rates": rates, "questions": [p["question"] for p in problems]})
    return rates


def screened(problems: list[dict], rates: list[float], band: tuple[float, float]) -> list[dict]:
    """The problems whose solve rate lies in `band` (inclusive), in pool order."""
    kept = [p for p, r in zip(problems, rates) if band[0] <= r <= band[1]]
    if not kept:
        raise UserError(f"no training problem has a solve rate in {list(band)}; widen --solve-band")
    return kept


# ---------------------------------------------------------------- training


CHECKPOINTS = "trainer"    # the run folder's resumable Trainer checkpoints, removed when the run completes
RUN_CONFIG = "run_config.json"   # the config of a started run: a resumed run must match it


def _check_resumable(config: PostTrainConfig, base_ref: str, out: Path) -> str | None:
    """The checkpoint to resume from (None: start fresh). A folder holding another run's state or a
    finished run is refused rather than overwritten."""
    started = out / RUN_CONFIG
    if (out / "train_summary.json").exists():
        raise UserError(f"{out} holds a finished run (train_summary.json); give another --out or remove it")
    if not started.exists():
        return None
    recorded = json.loads(started.read_text())
    mine = {"config": config.as_json(), "base_ref": base_ref}
    if recorded != mine:
        changed = sorted(k for k in {**recorded["config"], **mine["config"]}
                         if recorded["config"].get(k) != mine["config"].get(k))
        if recorded["base_ref"] != base_ref:
            changed.append("base")
        raise UserError(f"{out} holds a stopped run with other settings ({', '.join(changed)}); rerun it with "
                        f"the same settings to continue it, or give another --out")
    from transformers.trainer_utils import get_last_checkpoint

    folder = out / CHECKPOINTS
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def _stop_after(minutes: float | None):
    """A TrainerCallback that ends the sitting (saving a checkpoint) once `minutes` have passed."""
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def __init__(self):
            self.started = time.time()

        def on_step_end(self, args, state, control, **kwargs):
            if minutes is not None and time.time() - self.started >= 60 * minutes and state.global_step < state.max_steps:
                control.should_save = True
                control.should_training_stop = True
            return control

    return StopAfter()


def _heldout_curve(config: PostTrainConfig, tokenizer, path: Path, resumed_step: int):
    """A TrainerCallback that writes greedy held-out accuracy (first `curve_n` problems per task) to
    `path` at step 0 and every `curve_every` steps; rows past `resumed_step` (from a stopped sitting)
    are recomputed."""
    from transformers import TrainerCallback

    problems = heldout_problems(config.curve_n, config.tasks)
    rows = [r for r in (json.loads(path.read_text()) if path.exists() else []) if r["step"] <= resumed_step]

    def point(model, step):
        rng = torch.random.get_rng_state()   # evaluation must not move the training's random stream
        was_training = model.training
        model.eval()
        graded = evaluate(model, tokenizer, problems, config.max_new_tokens, f"{config.algo}@{step}")
        model.train(was_training)
        torch.random.set_rng_state(rng)
        by_task = {t: sum(r["correct"] for r in graded if r["task"] == t) / config.curve_n for t in config.tasks}
        rows.append({"step": step, "n": len(graded), "accuracy": sum(r["correct"] for r in graded) / len(graded),
                     "by_task": by_task})
        atomic_write_json(path, rows)

    class Curve(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if not any(r["step"] == 0 for r in rows):
                point(model, 0)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = state.global_step
            if (step % config.curve_every == 0 or step == state.max_steps) and not any(r["step"] == step for r in rows):
                point(model, step)

    return Curve()


def train(config: PostTrainConfig, out: Path, base: str | None = None, max_minutes: float | None = None) -> dict:
    """Post-train `base` with `config.algo`; write adapter (or full weights), config, log and curve PNG.

    Saves a resumable checkpoint every `config.save_every` steps under `out/trainer`; called again
    with the same config and `out`, it continues the stopped run from its last checkpoint, with the
    same result as an uninterrupted run. `max_minutes` ends this sitting after the first step past
    that time (checkpoint saved). Returns the summary written to `out/train_summary.json`, or
    {"stopped_at": step, "steps": N} when the sitting ended before the last step.
    """
    from datasets import Dataset
    from transformers import set_seed

    base_ref = base or "bundled"
    base = resolve_base(base)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    resume = _check_resumable(config, base_ref, out)
    atomic_write_json(out / RUN_CONFIG, {"config": config.as_json(), "base_ref": base_ref})
    set_seed(config.seed)
    model, tokenizer = _load_trainable(base)
    problems = training_problems(config)
    started = time.time()
    extra: dict = {"train_pool": len(problems)}
    if config.solve_band is not None:
        rates = solve_rates(model, tokenizer, base, problems, config)
        problems = screened(problems, rates, config.solve_band)
        extra["screened_pool"] = len(problems)
        set_seed(config.seed)   # screening sampled; training starts from the seed either way
    prompts = [{"prompt": render_prompt(prompt_template(tokenizer), p["question"], tokenizer), "answer": p["answer"]}
               for p in problems]
    per_step = config.sequences_per_step
    if config.algo == "sft":
        from trl import SFTConfig, SFTTrainer

        data = [{"prompt": row["prompt"], "completion": worked_solution(p["expression"])}
                for row, p in zip(prompts, problems)]
        args = SFTConfig(**_common_args(config, out), per_device_train_batch_size=per_step,
                         max_length=384, completion_only_loss=True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data),
                             processing_class=tokenizer, peft_config=_peft_config(config))
    elif config.algo in ("grpo", "rloo"):
        from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

        config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if config.algo == "grpo" else (RLOOConfig, RLOOTrainer)
        args = config_cls(**_common_args(config, out), per_device_train_batch_size=per_step,
                          num_generations=config.rl_generations, max_completion_length=config.max_new_tokens,
                          temperature=config.temperature, beta=0.0)
        trainer = trainer_cls(model=model, reward_funcs=exact_answer_reward, args=args,
                              train_dataset=Dataset.from_list(prompts), processing_class=tokenizer,
                              peft_config=_peft_config(config))
    elif config.algo == "dpo":
        from trl import DPOConfig, DPOTrainer

        pairs_path = out / "preference_pairs.json"
        if pairs_path.exists():   # a resumed run trains on the pairs its first sitting sampled
            pairs = json.loads(pairs_path.read_text())
            extra.update(json.loads((out / "preference_sampling.json").read_text()))
        else:
            n_pairs = per_step // 2 * max(1, config.steps // config.dpo_epochs)
            pairs, sampled = build_preference_pairs(model, tokenizer, problems, config, n_pairs)
            if len(pairs) < per_step // 2:
                raise UserError(f"only {len(pairs)} preference pairs found: the base never or always solves "
                                "these problems, so DPO has no signal")
            extra.update({"preference_pairs": len(pairs), "problems_sampled": sampled,
                          "pair_sampling_s": round(time.time() - started, 1)})
            atomic_write_json(out / "preference_sampling.json",
                              {k: extra[k] for k in ("preference_pairs", "problems_sampled", "pair_sampling_s")})
            atomic_write_json(pairs_path, pairs)
        args = DPOConfig(**_common_args(config, out), per_device_train_batch_size=per_step // 2,
                         beta=config.beta, max_length=384)
        trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs),
                             processing_class=tokenizer, peft_config=_peft_config(config))
    else:
        from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

        data = Dataset.from_list(prompts)
        args = OnlineDPOConfig(**_common_args(config, out), per_device_train_batch_size=per_step // 2,
                               max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                               beta=config.beta)
        trainer = OnlineDPOTrainer(model=model, reward_funcs=exact_answer_reward, args=args, train_dataset=data,
                                   processing_class=tokenizer, peft_config=_peft_config(config))
    resumed_step = int(Path(resume).name.rsplit("-", 1)[1]) if resume else 0
    trainer.add_callback(_stop_after(max_minutes))
    if config.curve_every:
        trainer.add_callback(_heldout_curve(config, tokenizer, out / "heldout_curve.json", resumed_step))
    sittings = json.loads((out / "sittings.json").read_text()) if resume and (out / "sittings.json").exists() else []
    train_started = time.time()
    if resume:
        print(f"resuming {out} from step {resumed_step} of {config.steps}")
    trainer.train(resume_from_checkpoint=resume)
    sittings.append({"from_step": resumed_step, "to_step": trainer.state.global_step,
                     "train_s": round(time.time() - train_started, 1), "threads": torch.get_num_threads(),
                     "platform": platform.platform(), "device": "cuda" if torch.cuda.is_available() else "cpu"})
    atomic_write_json(out / "sittings.json", sittings)
    if trainer.state.global_step < config.steps:
        return {"stopped_at": trainer.state.global_step, "steps": config.steps}
    train_s = sum(s["train_s"] for s in sittings)
    trained = trainer.model
    trained.save_pretrained(out / ("adapter" if not config.full_weights else "model"))
    if not config.full_weights:   # name the base by its reference, not by this machine's cache path
        adapter_config = out / "adapter" / "adapter_config.json"
        atomic_write_json(adapter_config, {**json.loads(adapter_config.read_text()),
                                           "base_model_name_or_path": base_ref})
    if config.full_weights:
        tokenizer.save_pretrained(out / "model")
    # a resumed Trainer restores the rows logged before its checkpoint, so this spans every sitting; the
    # Trainer's closing row (train_loss) averages the last sitting only and is left out
    log = [row for row in trainer.state.log_history if "step" in row and "train_loss" not in row]
    atomic_write_json(out / "train_log.json", log)
    plot_curves(log, config.algo, out / "curves.png",
                json.loads((out / "heldout_curve.json").read_text()) if config.curve_every else None)
    summary = {"config": config.as_json(), "algorithm_kind": ALGORITHM_KIND[config.algo], "base_ref": base_ref,
               "base_fingerprint": _folder_fingerprint(Path(base)), "train_s": round(train_s, 1),
               "total_s": round(time.time() - started, 1), "threads": torch.get_num_threads(),
               "platform": platform.platform(), "versions": library_versions(), "sittings": sittings, **extra}
    atomic_write_json(out / "train_summary.json", summary)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    if not config.full_weights:
        store_adapter_bf16(out)
    return summary


def store_adapter_bf16(run: Path) -> None:
    """Rewrite a run's LoRA adapter in bfloat16 (half the bytes; evaluation and merging read this
    stored adapter) and record it in train_summary.json."""
    from safetensors.torch import load_file, save_file

    path = Path(run) / "adapter" / "adapter_model.safetensors"
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(path).items()}
    tmp = temp_file(path.parent, ".safetensors")
    save_file(tensors, tmp, metadata={"format": "pt"})
    os.replace(tmp, path)
    summary_path = Path(run) / "train_summary.json"
    summary = json.loads(summary_path.read_text())
    summary["adapter_dtype"] = "bfloat16"
    atomic_write_json(summary_path, summary)


def _folder_fingerprint(folder: Path) -> str:
    from harness.models.loading import _weight_files, sha256_files

    return sha256_files(_weight_files(folder)) if folder.is_dir() else f"hub:{folder}"


def plot_curves(log: list[dict], algo: str, path: Path, heldout: list[dict] | None = None) -> None:
    """Reward (online algorithms) and loss per step, and the held-out accuracy curve when given
    (rows of heldout_curve.json), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("reward", "objective/scores", "rewards/accuracies", "loss", "rewards/margins")
            if any(k in row for row in log)]
    panels = len(keys) + bool(heldout)
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        rows = [(r["step"], r[key]) for r in log if key in r]
        ax.plot([s for s, _ in rows], [v for _, v in rows], marker=".")
        ax.set_title(key)
        ax.set_xlabel("step")
    if heldout:
        ax = axes[0][-1]
        steps = [r["step"] for r in heldout]
        ax.plot(steps, [r["accuracy"] for r in heldout], marker="o", color="black", label="all")
        for task in heldout[0]["by_task"]:
            ax.plot(steps, [r["by_task"][task] for r in heldout], marker=".", label=task)
        ax.set_title(f"held-out accuracy (greedy, n={heldout[0]['n']})")
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.suptitle(f"{algo} on SmolLM2-135M-Instruct (LoRA)" if algo else "")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_file(path.parent, ".png")
    fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    os.replace(tmp, path)


# ---------------------------------------------------------------- held-out evaluation


def mcnemar_paired(base_correct: list[bool], post_correct: list[bool]) -> dict:
    """Fixed/broken counts of paired correctness and the exact two-sided McNemar p-value."""
    from harness.analysis.accuracy import mcnemar_exact

    if len(base_correct) != len(post_correct):
        raise UserError("McNemar needs the same problems for both models")
    fixed = sum(1 for b, p in zip(base_correct, post_correct) if not b and p)
    broken = sum(1 for b, p in zip(base_correct, post_correct) if b and not p)
    return {"fixed": fixed, "broken": broken, "p_value": mcnemar_exact(fixed, broken)}


def load_post_model(base: str, run: Path):
    """The post-trained model of a run folder: base + LoRA adapter merged, or the saved full weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = Path(run)
    if (run / "model").is_dir():
        return (AutoModelForCausalLM.from_pretrained(run / "model", dtype=torch.float32).eval(),
                AutoTokenizer.from_pretrained(run / "model"))
    if not (run / "adapter" / "adapter_config.json").exists():
        raise UserError(f"{run} holds neither adapter/ nor model/; is it a posttrain output folder?")
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, run / "adapter").merge_and_unload().eval()
    return model, AutoTokenizer.from_pretrained(base)


def evaluate(model, tokenizer, problems: list[dict], max_new_tokens: int, label: str) -> list[dict]:
    """Greedy completions on `problems` with their extracted answer, correctness and length in tokens."""
    rows = [_problem(i, p["question"], p["answer"]) for i, p in enumerate(problems)]
    generations = generate_answers(_loaded(model, tokenizer, label), rows, prompt_template(tokenizer),
                                   Decoding(max_new_tokens=max_new_tokens, batch_size=16), use_cache=False)
    return [heldout_row(p.get("id"), p.get("task"), p["question"], p["answer"], c)
            for p, c in zip(problems, check_answers(generations, rows, grader=POSTTRAIN_GRADER))]


# the trained format: a completion that ends with this sentence follows it, whether right or wrong
FINAL_SENTENCE = re.compile(r"The answer is -?\d+\.\s*$")


def heldout_row(problem_id, task, question: str, answer: str, checked) -> dict:
    """One held-out row of heldout.json: the problem, the model's completion, its grade, and whether
    it ends in the trained format ("The answer is N.")."""
    text = checked.generation.text
    return {"id": problem_id, "task": task, "question": question, "answer": answer,
            "completion": text, "tokens": len(checked.generation.answer_ids),
            "extracted": checked.check.extracted, "correct": checked.correct,
            "format": FINAL_SENTENCE.search(text) is not None}


def _base_generations(base: str, problems: list[dict], max_new_tokens: int) -> list[dict]:
    """Base-model held-out generations, cached by base fingerprint, problems and token budget."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.files import content_key

    key = content_key(_folder_fingerprint(Path(base)), problems, max_new_tokens, "chat-reason")
    path = cache_root() / "posttrain-eval" / f"base-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    rows = evaluate(model, AutoTokenizer.from_pretrained(base), problems, max_new_tokens, "base")
    atomic_write_json(path, rows)
    return rows


def evaluate_run(run: Path, n: int, base: str | None = None) -> dict:
    """Held-out accuracy of base and post model of one run (the same n problems of each task,
    greedy) with McNemar, overall and per task (`by_task`).

    Writes `run/heldout.json` (every generation, so the numbers can be recomputed) and returns its
    summary part.
    """
    run = Path(run)
    summary_path = run / "train_summary.json"
    if not summary_path.exists():
        raise UserError(f"{run} has no train_summary.json; run `python -m harness posttrain` first")
    summary = json.loads(summary_path.read_text())
    base = resolve_base(base or summary.get("base_ref"))
    config = summary["config"]
    problems = heldout_problems(n, tuple(config["tasks"]))
    base_rows = _base_generations(base, problems, config["max_new_tokens"])
    model, tokenizer = load_post_model(base, run)
    post_rows = evaluate(model, tokenizer, problems, config["max_new_tokens"], config["algo"])
    table = heldout_summary(config["algo"], base_rows, post_rows)
    atomic_write_json(run / "heldout.json", {"summary": table, "base": base_rows, "post": post_rows})
    return table


def heldout_rows_of_run(answers: Path, run: str, tasks: Sequence[str]) -> dict[str, list[dict]]:
    """{"base": rows, "post": rows} of a run from the answer fixtures `<answers>/<base|run>--<task>.json`:
    per task the first problems both files hold (a model may ship fewer answers than the base)."""
    sides: dict[str, list[dict]] = {"base": [], "post": []}
    for task in tasks:
        paths = {side: Path(answers) / f"{label}--{task}.json" for side, label in (("base", "base"), ("post", run))}
        for path in paths.values():
            if not path.is_file():
                raise UserError(f"{path} missing; run `python -m harness answer-fixtures --out {answers}` first")
        shared = min(len(json.loads(path.read_text())["rows"]) for path in paths.values())
        for side, path in paths.items():
            sides[side] += heldout_rows_from_fixture(path, task, shared)
    return sides


def heldout_rows_from_fixture(path: Path, task: str, n: int | None = None) -> list[dict]:
    """Held-out rows (as `evaluate` writes them) of one answer-fixture file, graded as the audit grades
    (harness.data.grading, `auto`: the task's own scorer), in the dataset's problem order; the first
    `n` problems (default: every answer the file holds)."""
    from harness.data.generation import Generation
    from harness.data.problems import load_reasoning_gym

    doc = json.loads(Path(path).read_text())
    generations = {r["generation"]["problem_id"]: Generation.from_json(r["generation"]) for r in doc["rows"]}
    problems = [p for p in load_reasoning_gym(task, n=n or len(generations), seed=HELDOUT_SEED).problems]
    missing = [p.id for p in problems if p.id not in generations]
    if missing:
        raise UserError(f"{path}: no answer to {missing[0]} (and {len(missing) - 1} more); rebuild the fixture")
    ordered = [generations[p.id] for p in problems]
    return [heldout_row(p.id, task, p.question, p.gold, c)
            for p, c in zip(problems, check_answers(ordered, problems, grader="auto"))]


def heldout_summary(algo: str, base_rows: list[dict], post_rows: list[dict]) -> dict:
    """accuracy_row over all held-out rows, plus one per task (`by_task`), mean answer lengths, the
    share of answers in the trained format (`base_format`, `post_format`), the share of questions
    whose post-trained answer differs from the checkpoint's (`changed_answers`), and the same among
    the questions both models answer correctly (changed_where_both_correct)."""
    def row(b, p):
        return {**accuracy_row(algo, [r["correct"] for r in b], [r["correct"] for r in p]),
                "base_mean_tokens": sum(r["tokens"] for r in b) / len(b),
                "post_mean_tokens": sum(r["tokens"] for r in p) / len(p),
                "base_format": sum(r["format"] for r in b) / len(b),
                "post_format": sum(r["format"] for r in p) / len(p),
                "changed_answers": sum(x["completion"] != y["completion"] for x, y in zip(b, p)) / len(b),
                **changed_where_both_correct(b, p)}

    tasks = list(dict.fromkeys(r["task"] for r in base_rows))
    return {**row(base_rows, post_rows),
            "by_task": {t: row([r for r in base_rows if r["task"] == t], [r for r in post_rows if r["task"] == t])
                        for t in tasks}}


def changed_where_both_correct(base_rows: list[dict], post_rows: list[dict]) -> dict:
    """Among the questions both models answer correctly (the audit's default selection), how many
    have a post answer that differs from the checkpoint's, as a count and a share."""
    both = [(b, p) for b, p in zip(base_rows, post_rows) if b["correct"] and p["correct"]]
    changed = sum(b["completion"] != p["completion"] for b, p in both)
    return {"both_correct": len(both), "both_correct_changed": changed,
            "both_correct_changed_share": changed / len(both) if both else 0.0}


def update_size(base, post, sequences: list[tuple[Sequence[int], Sequence[int]]]) -> dict:
    """How far training moved the model: the mean per-token KL(post || base) of the next-token
    distributions (nats, float32) over the answer tokens of `sequences` (prompt ids, answer ids: the
    post model's own held-out answers, teacher-forced through both models)."""
    total, tokens = 0.0, 0
    with torch.no_grad():
        for prompt, answer in sequences:
            if not answer:
                continue
            ids = torch.tensor([list(prompt) + list(answer)])
            span = slice(len(prompt) - 1, ids.shape[1] - 1)   # the positions that predict the answer tokens
            log_post = torch.log_softmax(post(ids).logits[0, span].float(), dim=-1)
            log_base = torch.log_softmax(base(ids).logits[0, span].float(), dim=-1)
            total += (log_post.exp() * (log_post - log_base)).sum().item()
            tokens += len(answer)
    if not tokens:
        raise UserError("no answer tokens to measure the update on; are the post model's answers empty?")
    return {"kl_per_token": total / tokens, "tokens": tokens, "answers": len(sequences)}


def update_of_run(run: Path, answers: Path, n: int, base: str) -> dict:
    """update_size of a run on the post model's first `n` held-out answers per task (answer fixtures)."""
    from transformers import AutoModelForCausalLM

    config = json.loads((Path(run) / "train_summary.json").read_text())["config"]
    sequences = []
    for task in config["tasks"]:
        rows = json.loads((Path(answers) / f"{Path(run).name}--{task}.json").read_text())["rows"][:n]
        sequences += [(r["generation"]["prompt_ids"], r["generation"]["answer_ids"]) for r in rows]
    base_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    post_model, _ = load_post_model(base, run)
    return {**update_size(base_model, post_model, sequences), "per_task": n}


def accuracy_row(algo: str, base_correct: list[bool], post_correct: list[bool]) -> dict:
    """Accuracies with 95 % Wilson intervals, and the paired McNemar test, of one run."""
    from harness.analysis.accuracy import wilson_interval

    n = len(base_correct)
    return {"algo": algo, "n": n, "base_accuracy": sum(base_correct) / n,
            "base_wilson95": list(wilson_interval(sum(base_correct), n)),
            "post_accuracy": sum(post_correct) / n, "post_wilson95": list(wilson_interval(sum(post_correct), n)),
            **mcnemar_paired(base_correct, post_correct)}


def accuracy_markdown(rows: list[dict]) -> str:
    """The held-out accuracy table as Markdown (accuracy with 95 % Wilson interval)."""
    def cell(acc, ci):
        return f"{acc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    lines = ["| run | algorithm | task | n | base | post | fixed | broken | McNemar exact p | mean tokens base → post "
             "| in format base → post | answers changed | both correct: changed / all | KL per token |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        update = r.get("update")
        kl = f"{update['kl_per_token']:.4f}" if update else "–"
        for task, t in [("all", r), *r.get("by_task", {}).items()]:
            lines.append(f"| {r.get('run', r['algo'])} | {r['algo']} | {task} | {t['n']} | "
                         f"{cell(t['base_accuracy'], t['base_wilson95'])} | {cell(t['post_accuracy'], t['post_wilson95'])} | "
                         f"{t['fixed']} | {t['broken']} | {t['p_value']:.3g} | "
                         f"{t['base_mean_tokens']:.1f} → {t['post_mean_tokens']:.1f} | "
                         f"{t['base_format']:.2f} → {t['post_format']:.2f} | {t['changed_answers']:.2f} | "
                         f"{t['both_correct_changed']} / {t['both_correct']} | {kl if task == 'all' else ''} |")
    return "\n".join(lines) + "\n"
