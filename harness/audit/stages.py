"""The audit's data stages for one (pair, dataset, config), each cached on disk by content hash.

    load pair models ─► greedy answers + checks ─► selection(α) ─► EAP rows (token mode)
      ─► EAP of base and post ─► fidelity of each model's scores against exact ablation

Stages take and return plain data. Cache keys hold what determines a stage's output: model
fingerprints, data revision, prompt template, decoding, selection parameters, the EAP rows
themselves, graph layout, dtype and device type. A stage found in the cache never loads a model,
so a fully cached run touches no weights. Every result carries its provenance and a ledger saying
which stages were computed and which were read back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.files import atomic_write_json, cache_root, content_key
from harness.errors import UserError
from harness.models.loading import scoring_pad_id
from harness.models.registry import ALGORITHM_KINDS, PairSpec, load_registry
from harness.models.pairs import load_pair_models
from harness.data.selection import TOKEN_MODES, VARIANTS, Selection, SelectionParams, build_eap_rows, select_samples

CACHE_VERSION = "audit-v1"

# Short dataset names; anything else must be a dataset spec that `load_problems` accepts
# (rg:<task>, hf:<hub id>, or a JSONL path).
DATASETS: dict[str, str] = {
    "chain_sum": "rg:chain_sum",
    "basic_arithmetic": "rg:basic_arithmetic",
    "products": "rg:products",
    "gsm_symbolic": "rg:gsm_symbolic",
    "gsm8k": "hf:openai/gsm8k",
    "math500": "hf:HuggingFaceH4/MATH-500",
}
ONLINE_RL = "online-rl"


def dataset_spec(name: str) -> str:
    """The `load_problems` spec of a dataset name; unknown names raise a UserError with the choices."""
    if name in DATASETS:
        return DATASETS[name]
    if name.startswith(("rg:", "hf:")) or name.endswith(".jsonl") or Path(name).is_file():
        return name
    raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, "
                    "or give rg:<reasoning-gym task>, hf:<hub id> or a JSONL file")


@dataclass(frozen=True)
class AuditConfig:
    """Budget and method choices of an audit run; `as_dict()` goes into every cell's provenance.

    questions: problems drawn per dataset (both models answer all of them).
    n_select: questions kept at most after selection (the paper: 100).
    max_new_tokens: answer budget; None uses the pair's registry value.
    fidelity_samples / fidelity_edges: questions and sampled edges per model in the fidelity check;
    a cell is INVALID when a model's EAP-vs-ablation Spearman is below fidelity_threshold.
    """

    questions: int = 100
    n_select: int = 100
    variant: str = "paper-code"
    beta: float = 0.5
    gamma: float = 1.5
    delta: float = 0.5
    selection_seed: int = 42
    data_seed: int = 0
    max_new_tokens: int | None = None
    generation_batch_size: int = 8
    eap_batch_size: int = 1
    layout: str = "paper"
    positions: str = "all"
    device: str = "cpu"
    dtype: str = "float32"
    fidelity_samples: int = 2
    fidelity_edges: int = 32
    fidelity_threshold: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise UserError(f"unknown selection variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        for name in ("questions", "n_select", "generation_batch_size", "eap_batch_size",
                     "fidelity_samples", "fidelity_edges"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not -1 <= self.fidelity_threshold <= 1:
            raise UserError(f"fidelity threshold is a Spearman correlation in [-1, 1], got {self.fidelity_threshold}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def validate_alpha(alpha: float) -> float:
    if not 0 < alpha <= 1:
        raise UserError(f"alpha must be in (0, 1], got {alpha}")
    return float(alpha)


def validate_token_mode(mode: str) -> str:
    if mode not in TOKEN_MODES:
        raise UserError(f"unknown token mode {mode!r}; choose one of {', '.join(TOKEN_MODES)}")
    return mode


# ---------------------------------------------------------------- stage results


@dataclass(frozen=True)
class PairAnswers:
    """Both models' checked greedy answers to the same problems, with what produced them."""

    pair: str
    dataset: str
    base: tuple  # CheckedGeneration
    post: tuple
    models: dict[str, dict]   # "base"/"post" -> ModelInfo fields (fingerprint, source, ...)
    data: dict                # problem-set provenance (name, revision, n, config)
    template: str
    decoding: dict
    key: str


@dataclass(frozen=True)
class Cell:
    """Everything a claim needs for one (pair, dataset, alpha, token mode).

    base/post: EdgeScores of each model on its rows (same question order). fidelity: per model the
    fidelity record (the fields of `harness.circuit.fidelity.Fidelity` plus "samples").
    """

    pair: PairSpec
    dataset: str
    alpha: float
    token_mode: str
    selection: Selection
    base: Any
    post: Any
    fidelity: dict[str, dict]
    provenance: dict[str, Any]

    @property
    def n(self) -> int:
        return len(self.selection.ids)

    @property
    def funnel(self) -> list[dict]:
        return [{"stage": s.step, "n": s.count, "rule": s.rule} for s in self.selection.funnel]

    @property
    def fidelity_spearman(self) -> float | None:
        """The smaller of the two models' Spearman correlations; None when not measured."""
        values = [f.get("spearman") for f in self.fidelity.values()]
        return None if any(v is None for v in values) else float(min(values))


# ---------------------------------------------------------------- the session


class AuditPipeline:
    """Runs and caches the stages; holds at most one pair's models in memory at a time.

    `ledger` counts stages by outcome, e.g. {"answers:computed": 1, "eap:cache": 4}.
    """

    def __init__(self, config: AuditConfig, registry: str | Path | None = None, *, progress: bool = True) -> None:
        self.config = config
        self.registry_path = registry
        self.pairs = load_registry(registry)
        self.progress = progress
        self.ledger: dict[str, int] = {}
        self._loaded: tuple[str, Any, Any] | None = None
        self._answers: dict[tuple[str, str], PairAnswers] = {}
        self._cells: dict[tuple, Cell] = {}
        self._file_hashes: dict[tuple, str] = {}

    # ------------------------------------------------------------ lookups

    def pair(self, name: str) -> PairSpec:
        if name not in self.pairs:
            raise UserError(f"unknown pair {name!r}; known pairs: {', '.join(self.pairs)}")
        return self.pairs[name]

    def pairs_of_kind(self, *kinds: str) -> list[PairSpec]:
        unknown = [k for k in kinds if k not in ALGORITHM_KINDS]
        if unknown:
            raise UserError(f"unknown algorithm kind(s) {', '.join(unknown)}; choose from {', '.join(ALGORITHM_KINDS)}")
        return [p for p in self.pairs.values() if p.algorithm_kind in kinds]

    def _count(self, stage: str, how: str) -> None:
        key = f"{stage}:{how}"
        self.ledger[key] = self.ledger.get(key, 0) + 1

    def _dir(self, stage: str) -> Path:
        return cache_root() / "audit" / stage

    # ------------------------------------------------------------ models

    def _models(self, spec: PairSpec):
        """(base, post) LoadedModels of a pair, loading them on first use (one pair held at a time)."""
        if self._loaded is None or self._loaded[0] != spec.name:
            self._loaded = None
            base, post = load_pair_models(spec, dtype=self.config.dtype, device=self.config.device)
            self._loaded = (spec.name, base, post)
            self._count("models", "loaded")
        return self._loaded[1], self._loaded[2]

    def _pair_identity(self, spec: PairSpec) -> dict:
        """What identifies the pair's weights without loading them: the registry entry plus hashes
        of the weight files (or adapter files) behind each reference."""
        from harness.models.pairs import build_reference

        ident = {k: v for k, v in dataclasses.asdict(spec).items() if k != "notes"}
        ident["base_files"] = self._hash_reference(build_reference(spec.base))
        if spec.post is not None:
            ident["post_files"] = self._hash_reference(build_reference(spec.post))
        else:
            adapter = Path(spec.post_adapter)
            if not (adapter / "adapter_config.json").is_file():
                raise UserError(f"pair {spec.name}: adapter folder {adapter} has no adapter_config.json; "
                                "train it (see fixtures/smollm2/rebuild.sh) or choose other --pairs")
            ident["adapter_files"] = self._hash_folder(adapter)
        return ident

    def _hash_reference(self, ref: str) -> str:
        path = Path(ref)
        return self._hash_folder(path) if path.exists() else f"hub:{ref}"

    def _hash_folder(self, folder: Path) -> str:
        from harness.models.loading import sha256_files

        files = sorted(p for p in ([folder] if folder.is_file() else folder.iterdir())
                       if p.is_file() and p.suffix in (".safetensors", ".bin", ".gguf", ".json"))
        stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
        if stamp not in self._file_hashes:
            self._file_hashes[stamp] = sha256_files(files)
        return self._file_hashes[stamp]

    # ------------------------------------------------------------ stage 1: answers

    def answers(self, pair_name: str, dataset: str) -> PairAnswers:
        """Greedy answers of base and post to the dataset's first `questions` problems, checked."""
        memo = (pair_name, dataset)
        if memo in self._answers:
            return self._answers[memo]
        from harness.data.grading import Check, CheckedGeneration
        from harness.data.generation import Decoding, Generation

        spec = self.pair(pair_name)
        cfg = self.config
        decoding = Decoding(max_new_tokens=cfg.max_new_tokens or spec.max_new_tokens,
                            batch_size=cfg.generation_batch_size, seed=cfg.seed)
        key = content_key(CACHE_VERSION, "answers", self._pair_identity(spec), dataset_spec(dataset),
                          cfg.questions, cfg.data_seed, spec.prompt_template, decoding.cache_fields(),
                          cfg.dtype)
        path = self._dir("answers") / f"{key}.json"
        if path.is_file():
            raw = json.loads(path.read_text())
            rows = {side: tuple(CheckedGeneration(Generation.from_json(r["generation"]), Check(**r["check"]))
                                for r in raw[side]) for side in ("base", "post")}
            result = PairAnswers(pair_name, dataset, rows["base"], rows["post"], raw["models"], raw["data"],
                                 raw["template"], raw["decoding"], key)
            self._count("answers", "cache")
        else:
            result = self._generate(spec, dataset, decoding, key)
            atomic_write_json(path, {
                side: [{"generation": c.generation.to_json(), "check": dataclasses.asdict(c.check)}
                       for c in getattr(result, side)] for side in ("base", "post")} | {
                "models": result.models, "data": result.data, "template": result.template,
                "decoding": result.decoding})
            self._count("answers", "computed")
        self._answers[memo] = result
        return result

    def _generate(self, spec: PairSpec, dataset: str, decoding, key: str) -> PairAnswers:
        from harness.data.grading import check_answers
        from harness.data.problems import load_problems
        from harness.data.generation import generate_answers
        from harness.models.prompts import get_template

        problems = load_problems(dataset_spec(dataset), n=self.config.questions, seed=self.config.data_seed)
        template = get_template(spec.prompt_template)
        base, post = self._models(spec)
        checked = {}
        for side, loaded in (("base", base), ("post", post)):
            generations = generate_answers(loaded, problems.problems, template, decoding, progress=self.progress)
            checked[side] = tuple(check_answers(generations, problems.problems))
        return PairAnswers(spec.name, dataset, checked["base"], checked["post"],
                           {"base": dataclasses.asdict(base.info), "post": dataclasses.asdict(post.info)},
                           problems.provenance(), template.name, dataclasses.asdict(decoding), key)

    # ------------------------------------------------------------ stage 2: selection

    def selection(self, pair_name: str, dataset: str, alpha: float) -> Selection:
        """Eqs. 10-12 on the cached answers (milliseconds; recomputed, not stored)."""
        cfg = self.config
        answers = self.answers(pair_name, dataset)
        params = SelectionParams(variant=cfg.variant, alpha=validate_alpha(alpha), beta=cfg.beta,
                                 gamma=cfg.gamma, delta=cfg.delta, n=cfg.n_select, seed=cfg.selection_seed,
                                 short_answers="drop")
        return select_samples(answers.base, answers.post, params)

    # ------------------------------------------------------------ stage 3: EAP

    def edge_scores(self, spec: PairSpec, side: str, fingerprint: str, rows: list[dict]):
        """EdgeScores of one model on its rows, from the cache or computed (model loaded on a miss)."""
        from harness.circuit.eap import EdgeScores, run_eap
        from harness.circuit.batches import Sample

        cfg = self.config
        key = content_key(CACHE_VERSION, "eap", fingerprint, rows, cfg.layout, cfg.positions, cfg.dtype,
                          cfg.device.split(":")[0])
        folder = self._dir("eap") / key
        if (folder / "edges.json").is_file():
            self._count("eap", "cache")
            scores = EdgeScores.load(folder)
        else:
            loaded = self._models(spec)[0 if side == "base" else 1]
            samples = [Sample.from_row(r) for r in rows]
            scores = run_eap(loaded.model, samples, layout=cfg.layout, positions=cfg.positions,
                             batch_size=cfg.eap_batch_size, pad_id=scoring_pad_id(loaded.tokenizer), progress=self.progress)
            scores.meta.update({"model_fingerprint": fingerprint, "cache_key": key})
            _save_dir_atomically(folder, scores.save)
            self._count("eap", "computed")
        return key, scores

    # ------------------------------------------------------------ stage 4: fidelity

    def fidelity(self, spec: PairSpec, side: str, eap_key: str, scores, rows: list[dict]) -> dict:
        """Fidelity of a model's EAP scores against exact edge ablation on its first
        `fidelity_samples` questions and `fidelity_edges` edges sampled by |EAP| stratum."""
        cfg = self.config
        k = min(cfg.fidelity_samples, len(rows))
        key = content_key(CACHE_VERSION, "fidelity+points", eap_key, k, cfg.fidelity_edges, cfg.seed)
        path = self._dir("fidelity") / f"{key}.json"
        if path.is_file():
            self._count("fidelity", "cache")
            return json.loads(path.read_text())
        from harness.circuit.fidelity import fidelity_for_model, fidelity_points

        loaded = self._models(spec)[0 if side == "base" else 1]
        samples, subset = _first_questions(scores, rows, k)
        measured, ablation = fidelity_for_model(loaded.model, samples, subset, n_edges=cfg.fidelity_edges,
                                                seed=cfg.seed, pad_id=scoring_pad_id(loaded.tokenizer),
                                                progress=self.progress)
        eap_values, exact_values = fidelity_points(subset, ablation)
        record = {"status": "measured", "samples": k, **measured.as_dict(),
                  "points": {"eap": eap_values, "exact": exact_values}}
        atomic_write_json(path, record)
        self._count("fidelity", "computed")
        return record

    # ------------------------------------------------------------ causal check of the ranking

    def causal(self, cell: "Cell", side: str = "post") -> dict:
        """Top-k EAP edges vs k random edges removed (log-spaced k, 2 random draws) on the cell's
        first `fidelity_samples` questions: losses and circuit faithfulness (harness.circuit.fidelity)."""
        from dataclasses import asdict

        from harness.circuit.fidelity import causal_curve, log_spaced

        cfg = self.config
        scores = cell.post if side == "post" else cell.base
        rows = dict(zip(("base", "post"), build_eap_rows(cell.selection, cell.token_mode)))[side]
        k = min(cfg.fidelity_samples, len(rows))
        eap_key = cell.provenance["cache_keys"][f"eap_{side}"]
        key = content_key(CACHE_VERSION, "causal", eap_key, k, cfg.seed)
        path = self._dir("causal") / f"{key}.json"
        if path.is_file():
            self._count("causal", "cache")
            return json.loads(path.read_text())
        loaded = self._models(cell.pair)[0 if side == "base" else 1]
        samples, subset = _first_questions(scores, rows, k)
        curve = causal_curve(loaded.model, samples, subset, ks=log_spaced(scores.graph.n_edges, 5),
                             n_random=2, seed=cfg.seed, pad_id=scoring_pad_id(loaded.tokenizer),
                             progress=self.progress)
        record = {"side": side, "samples": k, **asdict(curve)}
        atomic_write_json(path, record)
        self._count("causal", "computed")
        return record

    # ------------------------------------------------------------ a whole cell

    def cell(self, pair_name: str, dataset: str, alpha: float, token_mode: str = "own") -> Cell:
        """Selection, EAP of both models and their fidelity for one (pair, dataset, alpha, mode)."""
        memo = (pair_name, dataset, float(alpha), token_mode)
        if memo in self._cells:
            return self._cells[memo]
        spec = self.pair(pair_name)
        validate_token_mode(token_mode)
        answers = self.answers(pair_name, dataset)
        selection = self.selection(pair_name, dataset, alpha)
        rows = dict(zip(("base", "post"), build_eap_rows(selection, token_mode)))
        scores, fidelity, eap_keys = {}, {}, {}
        for side in ("base", "post"):
            fingerprint = answers.models[side]["fingerprint"]
            eap_keys[side], scores[side] = self.edge_scores(spec, side, fingerprint, rows[side])
            fidelity[side] = self.fidelity(spec, side, eap_keys[side], scores[side], rows[side])
        provenance = {
            "pair": {"name": spec.name, "algorithm": spec.algorithm, "algorithm_kind": spec.algorithm_kind,
                     "base": spec.base, "post": spec.post or spec.post_adapter},
            "models": answers.models, "data": answers.data, "template": answers.template,
            "decoding": answers.decoding, "audit_config": self.config.as_dict(),
            "config_hash": content_key(self.config.as_dict()),
            "selection": {"variant": selection.params.variant, "t_bar": selection.t_bar,
                          "t_cut": selection.t_cut, "seed": selection.params.seed},
            "cache_keys": {"answers": answers.key, **{f"eap_{s}": k for s, k in eap_keys.items()}},
            "ledger": dict(self.ledger),
        }
        result = Cell(spec, dataset, float(alpha), token_mode, selection, scores["base"], scores["post"],
                      fidelity, provenance)
        self._cells[memo] = result
        return result


def _first_questions(scores, rows: list[dict], k: int):
    """The first k EAP rows as Samples, and the matching slice of their EdgeScores."""
    from harness.circuit.eap import EdgeScores
    from harness.circuit.batches import Sample

    samples = [Sample.from_row(r) for r in rows[:k]]
    subset = EdgeScores(scores=scores.scores[:k], graph=scores.graph, ids=scores.ids[:k],
                        positions=scores.positions, loss=scores.loss[:k], ablation=scores.ablation,
                        meta=scores.meta)
    return samples, subset


def _save_dir_atomically(folder: Path, write, marker: str = "edges.json") -> None:
    """Call `write(tmp_dir)` then rename it into place; if another writer got there first
    (`marker` exists in the folder), keep theirs."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        write(tmp)
        os.replace(tmp, folder)
    except OSError:
        if not (folder / marker).is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
