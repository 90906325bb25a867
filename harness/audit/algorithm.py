"""Answers about algorithms, not checkpoints: the training run is the unit.

A paper's claim ("online RL raises intensity") is about an algorithm. Each judged cell holds one trained
run fixed and resamples questions, so it says "this checkpoint differs from its base". Here the cells of
one claim, algorithm kind, dataset, alpha, metric and token mode are read together, one per run (a post
model trained from the shared base), beside the seed controls of the same claim and grid point (two runs
of one algorithm that differ only in the seed).

The rule (`RULE`), an intersection-union test across runs with the seed control as the yardstick:
- a seed control decided in either direction (SUPPORTED or REFUTED: which seed sits on the base side is
  arbitrary) keeps the answer INCONCLUSIVE, "within seed-to-seed variation", with the numbers;
- one run: INCONCLUSIVE, "one run: this verdict is about this checkpoint, not the algorithm";
- every run SUPPORTED: SUPPORTED; every run REFUTED: REFUTED (each run's own test already controls its
  error rate, so requiring all of them keeps the answer's);
- otherwise INCONCLUSIVE, naming each run's verdict.
The control decides only C1-C7 (`CONTROLLED`): C8 is a property of the method, C9 of behaviour.
A pair whose base model is another pair's post model (by weight fingerprint) compares two runs, whatever
kind it is registered as: it is read as a control, never as a run (`between_runs`).

Beside the answer, a random-effects estimate (Paule-Mandel, statsmodels' `combine_effects` with
method_re="iterated"; its DerSimonian-Laird option leaves a negative tau^2 untruncated, which gives
negative weights when the runs agree more than their CIs expect) of the runs' effects, each with the standard error its CI implies, and the between-run variance tau^2 and I^2:
what "the algorithm does X" would mean as a number, and how much runs differ. Effects are relative changes
(effect / |base value|) where the cell has a base value, so runs from different base models pool.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.stats import norm

from harness.audit.verdicts import CellResult, Verdict

CONTROLLED = ("C1", "C2", "C3", "C4", "C5", "C6", "C7")
NOT_RUN_LEVEL = ("C6", "C8")   # C6 already pools every online-RL experiment; C8 is about the method
RULE = ("Algorithm-level answer, the training run as the unit: SUPPORTED if every run (a post model "
        "trained from the shared base) of the algorithm kind is SUPPORTED at this dataset, alpha, metric and "
        "token mode, REFUTED if every run is REFUTED, and INCONCLUSIVE with one run (a verdict about that "
        "checkpoint, not the algorithm), when runs disagree, or when a seed control of the same point is "
        "decided in either direction (C1-C7: the effect is then within seed-to-seed variation). Beside it, a "
        "Paule-Mandel random-effects estimate of the runs' relative changes with its 95% CI, tau^2 and I^2")


@dataclass
class AlgorithmAnswer:
    """One algorithm-level answer. runs / controls: one entry per run / seed-control cell ({pair, cell_id,
    verdict, effect, ci, relative, relative_ci}); pooled: the random-effects estimate ({estimate, ci,
    tau2, i2, n_runs, scale}) or None with fewer than 2 runs that carry a CI."""

    claim_id: str
    kind: str
    dataset: str | None
    alpha: float | None
    metric: str | None
    token_mode: str | None
    verdict: Verdict
    reason: str
    runs: list[dict[str, Any]]
    controls: list[dict[str, Any]] = field(default_factory=list)
    pooled: dict[str, Any] | None = None
    rule: str = RULE

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = self.verdict.value
        return out


def cell_kind(cell: CellResult) -> str | None:
    """The algorithm kind of the cell's pair, from its provenance (None for a cell without a pair)."""
    return ((cell.provenance or {}).get("pair") or {}).get("algorithm_kind")


def is_seed_control(cell: CellResult) -> bool:
    """A seed-control cell: the same claim on two runs of one algorithm that differ only in the seed."""
    return bool((cell.extra or {}).get("control")) or cell_kind(cell) == "seed-control"


def fingerprint(cell: CellResult, side: str) -> str | None:
    return (((cell.provenance or {}).get("models") or {}).get(side) or {}).get("fingerprint")


def between_runs(cells: Sequence[CellResult]) -> set[str]:
    """Pairs whose base model is another pair's post-trained model (by weight fingerprint): they compare
    two runs, not a run with the base it was trained from, whatever kind they are registered as. They are
    read as controls, never as runs."""
    posts = {}
    for cell in cells:
        if cell.pair and fingerprint(cell, "post"):
            posts.setdefault(fingerprint(cell, "post"), set()).add(cell.pair)
    return {c.pair for c in cells if c.pair and fingerprint(c, "base") in posts
            and posts[fingerprint(c, "base")] - {c.pair}}


def _run_entry(cell: CellResult) -> dict[str, Any]:
    """A run's (or control's) verdict, effect and CI, and the same as a relative change."""
    ci = [cell.ci_low, cell.ci_high]
    scale = abs(cell.base_value) if cell.base_value not in (None, 0) and cell.claim_id not in ("C4", "C5") else None
    relative = None if cell.effect is None else (cell.effect / scale if scale else cell.effect)
    relative_ci = [None if c is None else (c / scale if scale else c) for c in ci]
    return {"pair": cell.pair, "cell_id": cell.cell_id, "verdict": cell.verdict.value, "effect": cell.effect,
            "ci": ci, "relative": relative, "relative_ci": relative_ci,
            "scale": "relative to |base value|" if scale else "the cell's own effect",
            "ci_level": ((cell.extra or {}).get("stats_config") or {}).get("ci_level", 0.95)}


def pooled_estimate(runs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Paule-Mandel random-effects estimate of the runs' relative effects (statsmodels), each run's
    variance from its CI: ((hi - lo) / (2 z))^2, z the normal quantile of its CI level. None with fewer than
    2 runs that carry a finite, non-degenerate CI."""
    from statsmodels.stats.meta_analysis import combine_effects

    usable = [r for r in runs if r["relative"] is not None and all(c is not None for c in r["relative_ci"])
              and r["relative_ci"][1] > r["relative_ci"][0]]
    if len(usable) < 2:
        return None
    effects = np.array([r["relative"] for r in usable], dtype=float)
    z = np.array([norm.ppf(0.5 + r["ci_level"] / 2) for r in usable])
    variances = np.array([((r["relative_ci"][1] - r["relative_ci"][0]) / (2 * zi)) ** 2 for r, zi in zip(usable, z)])
    result = combine_effects(effects, variances, method_re="iterated")
    frame = result.summary_frame()
    row = frame.loc["random effect"]
    return {"estimate": float(row["eff"]), "ci": [float(row["ci_low"]), float(row["ci_upp"])],
            "tau2": max(float(result.tau2), 0.0), "i2": max(float(result.i2), 0.0), "n_runs": len(usable),
            "pairs": [r["pair"] for r in usable], "scale": usable[0]["scale"], "method": "Paule-Mandel, 95% CI"}


def _fmt(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:+.3g}"


def describe_run(entry: dict[str, Any]) -> str:
    lo, hi = entry["relative_ci"]
    return f"{entry['pair']} {entry['verdict']} ({_fmt(entry['relative'])} [{_fmt(lo)}, {_fmt(hi)}])"


def decide(claim_id: str, runs: Sequence[dict[str, Any]], controls: Sequence[dict[str, Any]]) -> tuple[Verdict, str]:
    """The rule (module docstring) on the runs' and controls' verdicts."""
    decided = [c for c in controls if c["verdict"] in (Verdict.SUPPORTED.value, Verdict.REFUTED.value)]
    verdicts = [r["verdict"] for r in runs]
    each = "; ".join(describe_run(r) for r in runs)
    if decided and claim_id in CONTROLLED:
        return Verdict.INCONCLUSIVE, (
            f"within seed-to-seed variation: the seed control {', '.join(describe_run(c) for c in decided)} is decided "
            f"like a treatment, so the runs' verdicts ({each}) are not attributable to the algorithm")
    if len(runs) == 1:
        return Verdict.INCONCLUSIVE, (f"one run: this verdict ({each}) is about this checkpoint, not the algorithm; "
                                      "an algorithm-level answer needs at least two runs")
    control = ("; seed control " + ", ".join(describe_run(c) for c in controls) + " undecided") if controls else (
        "; no seed control on this grid point")
    if Verdict.INVALID.value in verdicts:
        return Verdict.INCONCLUSIVE, f"not every run could be judged ({each}){control}"
    if all(v == Verdict.SUPPORTED.value for v in verdicts):
        return Verdict.SUPPORTED, f"every one of {len(runs)} runs SUPPORTED ({each}){control}"
    if all(v == Verdict.REFUTED.value for v in verdicts):
        return Verdict.REFUTED, f"every one of {len(runs)} runs REFUTED ({each}){control}"
    if all(v == Verdict.INCONCLUSIVE.value for v in verdicts):
        return Verdict.INCONCLUSIVE, f"no run is decided ({each}){control}"
    return Verdict.INCONCLUSIVE, f"the runs are not all decided alike ({each}){control}"


def algorithm_answers(cells: Sequence[CellResult]) -> list[AlgorithmAnswer]:
    """One answer per (claim, algorithm kind, dataset, alpha, metric, token mode) with at least one run;
    claims without runs as units (NOT_RUN_LEVEL), cells without a pair and cells whose pair's algorithm
    kind is not recorded (a report from before it was) are left out."""
    groups: dict[tuple, dict[str, list[CellResult]]] = {}
    compared = between_runs(cells)
    for cell in cells:
        if cell.pair is None or cell.claim_id in NOT_RUN_LEVEL or not (cell_kind(cell) or is_seed_control(cell)):
            continue
        point = (cell.claim_id, cell.dataset, cell.alpha, cell.metric, cell.token_mode)
        role = "controls" if is_seed_control(cell) or cell.pair in compared else cell_kind(cell)
        groups.setdefault(point, {}).setdefault(role, []).append(cell)
    answers = []
    for (claim_id, dataset, alpha, metric, token_mode), roles in sorted(
            groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        controls = [_run_entry(c) for c in sorted(roles.get("controls", []), key=lambda c: c.cell_id)]
        for kind, members in sorted((k, v) for k, v in roles.items() if k != "controls"):
            runs = [_run_entry(c) for c in sorted(members, key=lambda c: c.cell_id)]
            verdict, reason = decide(claim_id, runs, controls)
            answers.append(AlgorithmAnswer(claim_id, kind, dataset, alpha, metric, token_mode, verdict, reason, runs,
                                           controls, pooled_estimate(runs)))
    return answers


# ---------------------------------------------------------------- the population a verdict speaks about

def population(cells: Sequence[CellResult]) -> dict[str, Any]:
    """Who the run's verdicts are about, from the cells' provenance: per pair its algorithm and kind, base
    and post models with their parameter counts (where recorded), how it was post-trained (where the
    registry knows it), its tasks, and its accuracy change per task (C9: post - base, with its CI)."""
    pairs: dict[str, dict[str, Any]] = {}
    for cell in sorted(cells, key=lambda c: c.cell_id):
        if cell.pair is None:
            continue
        prov = cell.provenance or {}
        entry = pairs.setdefault(cell.pair, {"tasks": [], "accuracy_change": {}})
        info = prov.get("pair") or {}
        for key in ("algorithm", "algorithm_kind", "base", "post", "training"):
            if info.get(key) is not None:
                entry.setdefault(key, info[key])
        for side in ("base", "post"):
            count = ((prov.get("models") or {}).get(side) or {}).get("parameters")
            if count:
                entry.setdefault(f"{side}_parameters", count)
        if cell.dataset and cell.dataset not in entry["tasks"]:
            entry["tasks"].append(cell.dataset)
        if cell.claim_id == "C9" and cell.effect is not None:
            entry["accuracy_change"][cell.dataset] = {"change": cell.effect, "ci": [cell.ci_low, cell.ci_high],
                                                      "verdict": cell.verdict.value}
    bases = {e.get("base") for e in pairs.values() if e.get("base")}
    own = bool(bases) and all(str(b).startswith(("bundled:", "tiny:")) for b in bases)
    return {"pairs": pairs, "bundled_only": own}


def _size(count: int | None) -> str:
    return "size not recorded" if not count else f"{count / 1e6:.0f}M parameters" if count < 1e9 else f"{count / 1e9:.1f}B parameters"


def pair_scope(name: str, entry: dict[str, Any]) -> str:
    """One pair in words: 'smollm2-grpo (grpo, online-rl; LoRA r=8, 12 steps; bundled:... 135M parameters;
    accuracy chain_sum_2d -4.0 pts [-8.0, 0.0])'."""
    training = (entry.get("training") or {}).get("post")
    how = (f"{training['method']}, {training['steps']} steps, lr {training['learning_rate']:g}"
           if training and training.get("steps") is not None else "training not recorded")
    accuracy = ", ".join(f"{task} {100 * a['change']:+.1f} pts [{100 * a['ci'][0]:+.1f}, {100 * a['ci'][1]:+.1f}]"
                         if None not in a["ci"] else f"{task} {100 * a['change']:+.1f} pts"
                         for task, a in entry.get("accuracy_change", {}).items())
    return (f"{name} ({entry.get('algorithm', '?')}, {entry.get('algorithm_kind', '?')}; {how}; from "
            f"{entry.get('base', '?')}, {_size(entry.get('base_parameters'))}"
            + (f"; accuracy change {accuracy}" if accuracy else "") + ")")


OWN_RUNS = "These are the tool's own small post-trained runs, not the paper's 7B pairs: a verdict here is about them"


def scope_lines(pop: dict[str, Any]) -> list[str]:
    """The population as one line per pair, then the plain statement when every pair is the tool's own."""
    return [pair_scope(n, e) for n, e in pop["pairs"].items()] + ([OWN_RUNS + "."] if pop.get("bundled_only") else [])


def scope_head(pop: dict[str, Any], names: Sequence[str]) -> str:
    """'3 pair(s) on arithmetic_2d, chain_sum_2d': how many of the population's pairs, on which tasks."""
    tasks = list(dict.fromkeys(t for n in names for t in pop["pairs"][n]["tasks"]))
    return f"{len(names)} pair(s) on {', '.join(tasks)}"


def scope_text(pop: dict[str, Any], pairs: Sequence[str] | None = None) -> str:
    """The population in one paragraph (optionally only `pairs`), saying plainly when every pair is one of
    the tool's own bundled or tiny models rather than a paper's."""
    names = [n for n in pop["pairs"] if pairs is None or n in pairs]
    if not names:
        return "no pair"
    text = f"{scope_head(pop, names)}: " + "; ".join(pair_scope(n, pop["pairs"][n]) for n in names)
    return text + (f". {OWN_RUNS}" if pop.get("bundled_only") else "")
