"""The audit's one frozen configuration: every budget and method choice of a run that can change a
verdict, settable from `python -m harness audit --set KEY=VALUE` and `pytest suites --set KEY=VALUE`,
printed in the rules and recorded in every cell's provenance."""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Sequence

from harness.analysis.metrics import MetricConfig
from harness.analysis.stats.config import StatsConfig
from harness.circuit.fidelity import SAMPLINGS
from harness.data.backends import BACKENDS
from harness.data.generation import DecodingSettings
from harness.data.grading import GRADER_SETTINGS
from harness.data.selection import TOKEN_MODES, SelectionSettings
from harness.errors import UserError
from harness.models.loading import DTYPES

ROBUSTNESS_ESTIMATORS = ("exact", "lookahead")

NESTED = ("selection", "decoding", "metrics", "stats")
# Keys `--set` took before the settings were nested or renamed: refused with the key to use now.
RENAMED = {"n_select": "selection.n", "variant": "selection.variant", "beta": "selection.beta",
           "gamma": "selection.gamma", "delta": "selection.delta", "selection_seed": "selection.seed",
           "short_answers": "selection.short_answers", "decoding": "decoding.mode",
           "max_new_tokens": "decoding.max_new_tokens", "temperature": "decoding.temperature",
           "top_p": "decoding.top_p", "generation_batch_size": "decoding.batch_size",
           "stats.alpha": "stats.significance (alpha is the paper's truncation fraction)",
           "seed": "decoding.seed, fidelity_seed or causal_seed (one seed for each draw)"}


# Smallest tie tolerance (relative) per model dtype: the rounding of a metric computed from scores of a
# half-precision forward pass (10 mantissa bits for float16, 7 for bfloat16); float32 keeps the setting
TIE_FLOOR = {"float32": 0.0, "float16": 1e-3, "bfloat16": 1e-2}


@dataclass(frozen=True)
class AuditConfig:
    """Budget and method choices of an audit run; `as_dict()` goes into every cell's provenance.

    questions: problems drawn per dataset (both models answer all of them).
    selection: how questions are selected at every alpha (harness.data.selection.SelectionSettings:
    variant, length window, questions kept at most `n` (the paper: 100), seed, short answers, whose answers T̄ of T_cut is taken from).
    decoding: how answers are generated (harness.data.generation.DecodingSettings: greedy (the paper)
    or sample, seeded by its own `seed`; the answer budget, None for the pair's registry value; batch size).
    fidelity_seed: the draw of the fidelity check's uniform edges; causal_seed: the C8 causal check's
    random edges (its floor). Each draw has its own seed, so `--vary` can move one alone.
    causal_share: the share of the damage of exact ablation's own top k (loss increase over the clean
    loss when they are removed together) that EAP's top k must do for C8's causal check to pass (0.5: at
    least half of what the best choice single-edge ablation makes does; above 1, EAP's choice hurts more).
    fidelity_samples / fidelity_edges: questions (at most) and real edges per model in the fidelity
    check (exact single-edge ablation, float32); the same exact deltas feed robustness, the difference
    fidelity and C8's causal check. fidelity_sampling: how the edges are drawn: `stratified` (4 equal
    strata of the base model's mean |EAP| on the cell's rows, the edges split equally among them, each
    edge weighted by its inverse inclusion probability, so that an estimate speaks of every real edge
    while the few edges that carry most of |W| are in the sample) or `uniform`.
    fidelity_threshold: the Spearman a fidelity CI is judged against (FAITHFUL above it, UNFAITHFUL
    below, UNCERTAIN across); it gates nothing. fidelity_alpha: measure fidelity, robustness and the
    causal check at this alpha only; cells at another alpha carry none and say so (None: at every alpha). ablation_chunk: edge
    variants stacked in one restarted run of exact ablation (memory grows with it); logit_chunk: target
    positions whose logits exist at once in it (harness.circuit.ablation.chunked_target_nll). 0 lets the
    planner choose each per stage from the device's memory (harness.plan.estimate.choose_fidelity: the
    most variants up to 32, then the longest logit chunk up to 1024); both change a delta's rounding
    only, so a planned value is not part of the fidelity cache key, and each cell's provenance records
    the values its fidelity was measured with.
    robustness_estimator: what each claim is re-tested on: `exact` (exact single-edge ablation on the
    fidelity check's uniform edges; C1 and C3 have a sampled version) or `lookahead` (the lookahead
    estimator on every edge and question; C1-C3 and C7, at about 15x EAP's cost).
    eap_segments: EAP's activation checkpointing (harness.circuit.eap.checkpointed_scores; the same
    scores, not part of their cache key): 0 lets the planner choose per stage from the device's memory
    (none where plain EAP fits), N > 0 runs N segments. The segments used are in each cell's provenance.
    behaviour_questions / behaviour_ks / behaviour_bins / behaviour_seed: the causal claims on behaviour
    (harness.circuit.crossmodel): the first `behaviour_questions` questions of the dataset, both models
    teacher-forced on the question's reference solution (a correct worked solution); edges intervened on in
    sets of k in `behaviour_ks`, beside k random edges matched in magnitude over `behaviour_bins`
    equal-count bins (drawn with `behaviour_seed`).
    template_limit: largest share of a model's target tokens that may be answer template or prompt
    copies (harness.data.span) for a C1-C7 cell to get a directional verdict; above it the cell is
    INVALID, "the targets are the answer's template" (0.5: when most scored tokens carry no
    computation, a per-question change mostly reads the model's confidence on a fixed text).
    metrics: metric parameters (histogram range policy, bins, eps, structural zeros).
    stats: decision parameters (significance level, smallest effect of interest, ties, resamples).
    grader: how answers are graded (harness.data.grading): auto (paper for GSM8K/MATH, the task's
    own scorer for reasoning-gym), paper or lenient.
    answer_fixtures: folder of shipped greedy answers (harness.data.fixtures) used in place of
    generating when they match the model fingerprint, prompt and decoding: `bundled` (the bundled
    pairs' fixtures/smollm2/answers), `none`, or a path. fixture_verify_questions: answers per model
    regenerated to check a fixture (token-identical, else every answer of that model is regenerated).
    generation_backend: what generates the answers (harness.data.backends): `hf` (the model's
    `generate`; the CPU path) or `vllm` (a vLLM engine on the model's folder or hub id; GPU machines).
    """

    questions: int = 100
    data_seed: int = 0
    eap_batch_size: int = 1
    eap_segments: int = 0
    layout: str = "paper"
    positions: str = "all"
    device: str = "cpu"
    dtype: str = "float32"
    fidelity_samples: int = 16
    fidelity_edges: int = 32
    fidelity_sampling: str = "stratified"
    fidelity_threshold: float = 0.5
    fidelity_alpha: float | None = None
    ablation_chunk: int = 0
    logit_chunk: int = 0
    robustness_estimator: str = "exact"
    fidelity_seed: int = 0
    causal_seed: int = 0
    causal_share: float = 0.5
    behaviour_questions: int = 12
    behaviour_ks: tuple[int, ...] = (1, 4, 16, 64)
    behaviour_bins: int = 4
    behaviour_seed: int = 0
    grader: str = "auto"
    answer_fixtures: str = "bundled"
    fixture_verify_questions: int = 8
    generation_backend: str = "hf"
    template_limit: float = 0.5
    selection: SelectionSettings = field(default_factory=SelectionSettings)
    decoding: DecodingSettings = field(default_factory=DecodingSettings)
    metrics: MetricConfig = field(default_factory=MetricConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)

    def __post_init__(self) -> None:
        if self.layout not in ("paper", "block"):
            raise UserError(f"layout must be paper or block, got {self.layout!r}")
        if self.positions not in ("all", "targets"):
            raise UserError(f"positions must be all or targets, got {self.positions!r}")
        if self.grader not in GRADER_SETTINGS:
            raise UserError(f"unknown grader {self.grader!r}; choose one of {', '.join(GRADER_SETTINGS)}")
        for name in ("questions", "eap_batch_size", "fidelity_samples", "fidelity_edges", "fixture_verify_questions",
                     "behaviour_questions", "behaviour_bins"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name, unit in (("eap_segments", "segments"), ("ablation_chunk", "stacked variants"),
                           ("logit_chunk", "positions")):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be 0 (the planner's choice) or a number of {unit}, "
                                f"got {getattr(self, name)}")
        if self.generation_backend not in BACKENDS:
            raise UserError(f"generation_backend must be one of {', '.join(BACKENDS)}, got {self.generation_backend!r}")
        if self.robustness_estimator not in ROBUSTNESS_ESTIMATORS:
            raise UserError(f"robustness_estimator must be one of {', '.join(ROBUSTNESS_ESTIMATORS)}, "
                            f"got {self.robustness_estimator!r}")
        if self.fidelity_sampling not in SAMPLINGS:
            raise UserError(f"fidelity_sampling must be one of {', '.join(SAMPLINGS)}, got {self.fidelity_sampling!r}")
        if not 0 < self.causal_share <= 1:
            raise UserError(f"causal_share is a share of the damage of exact's top k, in (0, 1]; "
                            f"got {self.causal_share}")
        if not self.behaviour_ks or any(k < 1 for k in self.behaviour_ks) or list(self.behaviour_ks) != sorted(set(self.behaviour_ks)):
            raise UserError(f"behaviour_ks must be increasing whole numbers >= 1, e.g. 1,4,16,64; got {self.behaviour_ks}")
        if not 0 <= self.template_limit <= 1:
            raise UserError(f"template_limit is a share of target tokens in [0, 1], got {self.template_limit}")
        if self.fidelity_alpha is not None and not 0 < self.fidelity_alpha <= 1:
            raise UserError(f"fidelity_alpha must be in (0, 1] or none, got {self.fidelity_alpha}")
        if self.dtype not in DTYPES:
            raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise UserError(f"unknown device {self.device!r}; use cpu or cuda[:N]")
        for name in ("data_seed", "fidelity_seed", "causal_seed"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be at least 0, got {getattr(self, name)}")
        if not -1 <= self.fidelity_threshold <= 1:
            raise UserError(f"fidelity threshold is a Spearman correlation in [-1, 1], got {self.fidelity_threshold}")
        if self.stats.tie_rel_tol < TIE_FLOOR[self.dtype]:   # ties follow the dtype the scores were computed in
            object.__setattr__(self, "stats", dataclasses.replace(self.stats, tie_rel_tol=TIE_FLOOR[self.dtype]))

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON has them (tuples as lists), so that a record read back from a report
        compares equal to one made in this process."""
        out = dataclasses.asdict(self)
        out["metrics"], out["stats"] = self.metrics.as_dict(), self.stats.as_dict()
        return _as_json_values(out)

    def with_settings(self, settings: dict[str, str]) -> AuditConfig:
        """A copy with `KEY=VALUE` settings applied; KEY is a field name, or `GROUP.NAME` for a group of
        NESTED; VALUE is text converted to the field's type (a tuple as comma-separated values). A key
        of RENAMED is refused with the key to use now."""
        nested: dict[str, dict[str, Any]] = {name: {} for name in NESTED}
        top: dict[str, Any] = {}
        for key, text in settings.items():
            if key in RENAMED:
                raise UserError(f"--set {key}: this setting is now {RENAMED[key]}")
            head, _, tail = key.partition(".")
            if tail and head in nested:
                nested[head][tail] = _convert(getattr(self, head), tail, text, key)
            elif not tail and head not in nested:
                top[head] = _convert(self, head, text, key)
            else:
                raise UserError(f"--set {key}: unknown setting; settable: {', '.join(settable_keys())}")
        changed = {name: dataclasses.replace(getattr(self, name), **values) for name, values in nested.items() if values}
        return dataclasses.replace(self, **top, **changed)


def settable_keys() -> list[str]:
    """Every KEY that `--set KEY=VALUE` accepts."""
    defaults = AuditConfig()
    keys = [f.name for f in dataclasses.fields(AuditConfig) if f.name not in NESTED]
    return keys + [f"{group}.{f.name}" for group in NESTED for f in dataclasses.fields(getattr(defaults, group))]


def _convert(owner: Any, name: str, text: str, key: str) -> Any:
    """`text` as the type of field `name` of the dataclass instance `owner`."""
    fields = {f.name: f for f in dataclasses.fields(owner)}
    if name not in fields:
        raise UserError(f"--set {key}: unknown setting; settable: {', '.join(settable_keys())}")
    hint = typing.get_type_hints(type(owner))[name]
    current = getattr(owner, name)
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    if text.strip().lower() == "none" and union and type(None) in typing.get_args(hint):
        return None
    kind = type(current) if current is not None else options[0]
    kind = typing.get_origin(kind) or kind
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if kind is tuple:
            item = typing.get_args(next(o for o in options if (typing.get_origin(o) or o) is tuple))[0]
            return tuple(item(v.strip()) for v in text.split(",") if v.strip())
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            return kind(text)
        return kind(text)
    except (ValueError, TypeError, StopIteration):
        raise UserError(f"--set {key}={text}: not a valid {getattr(kind, '__name__', kind)}") from None


def settings_of(config: AuditConfig) -> dict[str, str]:
    """KEY -> VALUE text of every setting in which `config` differs from the defaults: the inverse of
    `AuditConfig().with_settings(...)`, how a config travels as `--set KEY=VALUE` to processes that
    take text (pytest's argv, xdist workers)."""
    defaults, out = AuditConfig(), {}
    for key in settable_keys():
        value, default = _value(config, key), _value(defaults, key)
        if value != default:
            out[key] = _text(value)
    return out


def _value(config: AuditConfig, key: str) -> Any:
    head, _, tail = key.partition(".")
    return getattr(getattr(config, head), tail) if tail else getattr(config, head)


def _text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(_text(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def parse_settings(items: list[str] | None) -> dict[str, str]:
    """['stats.sesoi_rel=0.1', ...] -> {'stats.sesoi_rel': '0.1', ...}; a malformed item is a UserError."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. stats.sesoi_rel=0.1")
        out[key.strip()] = value.strip()
    return out


def validate_alpha(alpha: float, where: str = "alpha") -> float:
    """The paper's truncation fraction alpha, in (0, 1], else a UserError naming `where`."""
    if not 0 < alpha <= 1:
        raise UserError(f"{where} must be in (0, 1], got {alpha}")
    return float(alpha)


def parse_alphas(values: str | Sequence[str], flag: str = "--alphas") -> tuple[float, ...]:
    """The alphas of comma-separated text or text items, in order (the one parser of alpha values);
    a non-number, a value outside (0, 1] or a repeated value (one cell counted twice by Holm) is a
    UserError naming `flag`."""
    items = [t.strip() for t in (values.split(",") if isinstance(values, str) else values) if t.strip()]
    alphas: list[float] = []
    for text in items:
        try:
            value = validate_alpha(float(text), flag)
        except ValueError:
            raise UserError(f"{flag}: {text!r} is not a number") from None
        if value in alphas:
            raise UserError(f"{flag}: {value} is given twice; give each alpha once")
        alphas.append(value)
    return tuple(alphas)


def parse_token_modes(values: str | Sequence[str], flag: str = "--token-mode") -> tuple[str, ...]:
    """The token modes of comma-separated text or text items, in order (the one parser of them); an
    unknown or repeated mode is a UserError naming `flag`."""
    items = [t.strip() for t in (values.split(",") if isinstance(values, str) else values) if t.strip()]
    unknown = [m for m in items if m not in TOKEN_MODES]
    if unknown:
        raise UserError(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(TOKEN_MODES)}")
    repeated = [m for i, m in enumerate(items) if m in items[:i]]
    if repeated:
        raise UserError(f"{flag}: {repeated[0]} is given twice; give each token mode once")
    return tuple(items)


def validate_token_mode(mode: str) -> str:
    if mode not in TOKEN_MODES:
        raise UserError(f"unknown token mode {mode!r}; choose one of {', '.join(TOKEN_MODES)}")
    return mode


def _as_json_values(node: Any) -> Any:
    """`node` with every tuple a list, recursively (the form json.loads gives back)."""
    if isinstance(node, dict):
        return {k: _as_json_values(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_as_json_values(v) for v in node]
    return node
