"""The audit's data stages for one (pair, dataset, config), each cached on disk by content hash.

    load pair models ─► greedy answers + checks ─► selection(α) ─► EAP rows (token mode)
      ─► EAP of base and post ─► fidelity of each model's scores against exact ablation
      ─► (C8) loss with the top-k EAP edges vs k random edges removed
      ─► (CB1-CB3) edges patched between the models or removed: the correct answer's log-probability

Stages take and return plain data. What each cache key holds is written once, in
`harness.audit.store`; which model is resident, in `harness.audit.session`. A stage found in the
cache never loads a model, so a fully cached run touches no weights. Every result carries its
provenance and a ledger saying which stages were computed and which were read back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from harness.audit.config import AuditConfig, validate_alpha, validate_token_mode
from harness.audit.records import SIDES, CellData, PairAnswers
from harness.audit.session import ModelSession
from harness.audit.store import (
    CacheStore,
    Ledger,
    answers_key,
    causal_key,
    eap_key,
    fidelity_key,
    interventions_key,
)
from harness.circuit.ablation import DEFAULT_CHUNK, DEFAULT_LOGIT_CHUNK
from harness.circuit.batches import Sample
from harness.circuit.causal import TopKCheck, causal_ks, topk_against_exact
from harness.circuit.crossmodel import intervention_curves
from harness.circuit.eap import EdgeScores, run_eap
from harness.circuit.fidelity import fidelity_for_model, fidelity_points
from harness.data.backends import Backend, make_backend
from harness.data.fixtures import FixtureIndex, Verification, verify_sample
from harness.data.generation import Decoding, Generation, generate_answers, with_references
from harness.data.grading import check_answers
from harness.data.problems import dataset_spec, load_problems
from harness.data.selection import (
    Selection,
    SelectionError,
    SelectionParams,
    build_eap_rows,
    select_samples,
)
from harness.errors import UserError
from harness.files import content_key
from harness.models.loading import scoring_pad_id
from harness.models.prompts import get_template
from harness.models.registry import DEFAULT_REGISTRY, PairSpec, training_of

BUNDLED_FIXTURES = DEFAULT_REGISTRY.parent / "smollm2" / "answers"
# what each JSON stage's entry holds: an entry without one of these is an older format, recomputed
ANSWER_FIELDS = ("base", "post", "models", "data", "template", "decoding")
FIDELITY_FIELDS = ("spearman", "ci", "status", "samples", "ids", "edges", "deltas", "weights", "points")
CAUSAL_FIELDS = ("side", "samples", *(f.name for f in dataclasses.fields(TopKCheck)))
INTERVENTION_FIELDS = ("restore", "install", "necessity", "probes", "questions")


def fixture_folder(setting: str) -> Path | None:
    """The answer-fixture folder of the `answer_fixtures` setting: bundled, none, or a path."""
    return {"bundled": BUNDLED_FIXTURES, "none": None}.get(setting, Path(setting))


def edge_seed(seed: int, base_model: str, dataset: str) -> int:
    """The seed of the fidelity edge draw of one base model and dataset (a 32-bit integer from the run's
    fidelity_seed, the base model's weights fingerprint, which does not depend on where it lies, and the
    dataset)."""
    return int(content_key("fidelity-edges", seed, base_model, dataset)[:8], 16)


class StageLog:
    """One line when a stage starts computing (never for a cached read) and one when it ends, through
    `write` (the suites give the pytest terminal, which shows them without -s): what it computes, how
    many items, an ETA from this run's own rate for that stage, then the time it took."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self.write = write
        self.seconds_per_item: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, stage: str, what: str, items: int, unit: str) -> Iterator[None]:
        if self.write is None:
            yield
            return
        rate = self.seconds_per_item.get(stage)
        eta = f", about {_duration(rate * items)} at this run's rate" if rate is not None else ""
        self.write(f"{stage} {what}: {items} {unit}{eta} ...")
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        self.seconds_per_item[stage] = seconds / max(items, 1)
        self.write(f"{stage} {what}: done in {_duration(seconds)}")


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class AuditPipeline:
    """Runs and caches the stages of an audit run; results are also kept in memory for the session.

    progress: tqdm bars (needs pytest -s); log: where StageLog writes its stage lines (None: nowhere).
    """

    def __init__(self, config: AuditConfig, registry: str | Path | None = None, *, progress: bool = True,
                 log: Callable[[str], None] | None = None,
                 plan_segments: Callable[[object, list[dict]], int] | None = None,
                 plan_fidelity: Callable[[object, list[dict], int, int], tuple[int, int]] | None = None) -> None:
        self.config = config
        self.plan_segments = plan_segments
        self.plan_fidelity = plan_fidelity
        self.progress = progress
        self.log = StageLog(log)
        self.ledger = Ledger()
        self.store = CacheStore(self.ledger)
        self.session = ModelSession(config, self.ledger, registry)
        self._answers: dict[tuple[str, str], PairAnswers] = {}
        self._failed: dict[tuple[str, str], Exception] = {}
        self._healed_generations: list[dict] = []
        self._cells: dict[tuple, CellData] = {}
        self._scores: dict[str, EdgeScores] = {}
        self._engines: dict[str, Backend] = {}
        self.fixtures = FixtureIndex(fixture_folder(config.answer_fixtures))
        self._fixture_checks: dict[str, Verification] = {}

    def pair(self, name: str) -> PairSpec:
        return self.session.pair(name)

    def cache_report(self) -> dict:
        """The run's cache ledger: stages computed, read back and healed (with where each corrupt entry
        went), for the report's provenance."""
        return {"root": str(self.store.cache), "ledger": self.ledger.as_dict(),
                "healed": list(self.store.healed) + list(self._healed_generations)}

    # ------------------------------------------------------------ stage 1: answers

    def answers(self, pair_name: str, dataset: str) -> PairAnswers:
        """Greedy answers of base and post to the dataset's first `questions` problems, checked."""
        memo = (pair_name, dataset)
        if memo in self._failed:
            raise self._failed[memo].with_traceback(None)
        if memo not in self._answers:
            try:
                self._answers[memo] = self._checked_answers(pair_name, dataset)
            except Exception as err:   # remembered: every later cell of this pair and dataset fails the same way
                self._failed[memo] = err
                raise
        return self._answers[memo]

    def _checked_answers(self, pair_name: str, dataset: str) -> PairAnswers:
        spec = self.pair(pair_name)
        cfg = self.config
        decoding = cfg.decoding.for_pair(spec.max_new_tokens)
        key = answers_key(self.session.pair_identity(spec), dataset_spec(dataset), cfg, spec.prompt_template,
                          decoding.cache_fields())
        raw = self.store.json_entry("answers", key, lambda: self._generate(spec, dataset, decoding, key).to_json(),
                                    fields=ANSWER_FIELDS)
        return PairAnswers.from_json(raw, pair_name, dataset, key)

    def _generate(self, spec: PairSpec, dataset: str, decoding: Decoding, key: str) -> PairAnswers:
        problems = load_problems(dataset_spec(dataset), n=self.config.questions, seed=self.config.data_seed)
        template = get_template(spec.prompt_template)
        checked, sources, infos = {}, {}, {}
        for side in SIDES:
            loaded = self.session.model(spec, side)
            infos[side] = dataclasses.asdict(loaded.info)
            with self.log.stage("answers", f"{spec.name} · {dataset} · {side}", len(problems.problems), "questions"):
                generations, sources[side] = self._answers_of(loaded, problems.problems, template, decoding)
            checked[side] = tuple(check_answers(generations, problems.problems, grader=self.config.grader))
        return PairAnswers(spec.name, dataset, checked["base"], checked["post"], infos,
                           problems.provenance(), template.name, dataclasses.asdict(decoding), key, sources)

    def _answers_of(self, loaded, problems, template, decoding: Decoding) -> tuple[list[Generation], dict]:
        """One model's answers and where they came from. Answers shipped in a fixture
        (harness.data.fixtures) for the first problems are used once a sample of them,
        `fixture_verify_questions` answers, regenerates token-identically (checked once per model and
        session); the problems the fixture does not hold are generated. A mismatch regenerates every
        answer of that model."""
        match = self.fixtures.lookup(loaded, problems, template, decoding)
        if match is None:
            return (self._generate_answers(loaded, problems, template, decoding),
                    {"source": "generated", "reason": "no answer fixture for this model, prompt and decoding"})
        fingerprint = loaded.info.fingerprint
        if fingerprint not in self._fixture_checks:
            check = verify_sample(loaded, match, problems, template, decoding,
                                  min_questions=self.config.fixture_verify_questions)
            self._fixture_checks[fingerprint] = check
            self.ledger.count("fixtures", "verified" if check.ok else "mismatch")
            if not check.ok:
                print(f"answer fixture {check.file}: {len(check.mismatched)} of {len(check.ids)} regenerated "
                      "answers differ; regenerating every answer of this model", flush=True)
        check = self._fixture_checks[fingerprint]
        if not check.ok:
            generations = self._generate_answers(loaded, problems, template, decoding, use_cache=False)
            return generations, {"source": "regenerated", "file": match.file, "reason": "the fixture's sample did "
                                 "not regenerate token-identically", "verification": check.as_dict()}
        # the verification regenerated answers of the first fixture this session used for the model,
        # which is this file or another one of the same model
        shipped = with_references([row.generation for row in match.rows], problems[:len(match.rows)], loaded.tokenizer)
        rest = list(problems[len(shipped):])
        generated = self._generate_answers(loaded, rest, template, decoding) if rest else []
        return shipped + generated, {"source": "fixture", "file": match.file, "from_fixture": len(shipped),
                                     "generated": len(rest), "verification": check.as_dict()}

    def _generate_answers(self, loaded, problems, template, decoding: Decoding, **options) -> list[Generation]:
        """generate_answers with this run's progress setting; cache entries it heals are counted."""
        before = len(self._healed_generations)
        name, fingerprint = self.config.generation_backend, loaded.info.fingerprint
        if name != "hf" and fingerprint not in self._engines:   # a vLLM engine: built once per model
            self._engines[fingerprint] = make_backend(name, loaded)
        generations = generate_answers(loaded, problems, template, decoding, progress=self.progress,
                                       healed=self._healed_generations, backend=self._engines.get(fingerprint, name),
                                       **options)
        for _ in range(len(self._healed_generations) - before):
            self.ledger.count("generations", "healed")
        return generations

    # ------------------------------------------------------------ stage 2: selection

    def selection(self, pair_name: str, dataset: str, alpha: float) -> Selection:
        """Eqs. 10-12 on the cached answers (milliseconds; recomputed, not stored)."""
        cfg = self.config
        answers = self.answers(pair_name, dataset)
        params = SelectionParams.at(cfg.selection, validate_alpha(alpha))
        return select_samples(answers.base, answers.post, params)

    # ------------------------------------------------------------ stage 3: EAP

    def edge_scores(self, spec: PairSpec, side: str, model: str, rows: list[dict],
                    method: str = "eap") -> tuple[str, EdgeScores]:
        """(cache key, EdgeScores) of one model on its rows, from the cache or computed; `method` is the
        estimator (`eap`, the paper's; `lookahead`, the robustness estimator)."""
        cfg = self.config
        key = eap_key(model, rows, cfg, method)

        def compute() -> EdgeScores:
            loaded = self.session.model(spec, side)
            t_cut = max(len(r["target_ids"]) for r in rows)
            segments = 1 if method != "eap" else self.eap_segments(loaded.model, rows)
            with self.log.stage(method, f"{spec.name} · {side} · T_cut {t_cut}", len(rows), "questions"):
                scores = run_eap(loaded.model, [Sample.from_row(r) for r in rows], layout=cfg.layout,
                                 positions=cfg.positions, batch_size=cfg.eap_batch_size,
                                 pad_id=scoring_pad_id(loaded.tokenizer), progress=self.progress, method=method,
                                 segments=segments)
            scores.meta.update({"model_fingerprint": model, "cache_key": key})
            return scores

        if key not in self._scores:   # read once per session: prepare() and cell() both ask
            self._scores[key] = self.store.folder_entry("eap", key, EdgeScores.load, compute,
                                                        lambda s, folder: s.save(folder))
        return key, self._scores[key]

    def eap_segments(self, model, rows: list[dict]) -> int:
        """`eap_segments`, or with 0 the `plan_segments` the pipeline was given (the runner's planner,
        harness.plan.estimate.segment_planner: 1 wherever plain EAP fits the device), else 1."""
        if self.config.eap_segments:
            return self.config.eap_segments
        return self.plan_segments(model, rows) if self.plan_segments is not None else 1

    def ablation_settings(self, model, rows: list[dict]) -> tuple[int, int]:
        """(stacked variants, logit chunk) of exact ablation on `rows`: `ablation_chunk` and `logit_chunk`
        where set (> 0), the rest chosen by `plan_fidelity` (the runner's planner,
        harness.plan.estimate.fidelity_planner), else the engine's defaults."""
        cfg = self.config
        if self.plan_fidelity is not None and not (cfg.ablation_chunk and cfg.logit_chunk):
            return self.plan_fidelity(model, rows, cfg.ablation_chunk, cfg.logit_chunk)
        return cfg.ablation_chunk or DEFAULT_CHUNK, cfg.logit_chunk or DEFAULT_LOGIT_CHUNK

    def estimator_scores(self, cell: CellData, method: str) -> tuple[EdgeScores, EdgeScores]:
        """(base, post) scores of a cell's rows by another estimator (the robustness estimator)."""
        rows = dict(zip(SIDES, build_eap_rows(cell.selection, cell.token_mode)))
        answers = self.answers(cell.pair.name, cell.dataset)
        base, post = (self.edge_scores(cell.pair, side, model_key(answers.models[side]), rows[side], method)[1]
                      for side in SIDES)
        return base, post

    # ------------------------------------------------------------ stage 4: fidelity

    def fidelity(self, spec: PairSpec, side: str, eap: str, scores: EdgeScores, rows: list[dict],
                 dataset: str, base: tuple[str, EdgeScores]) -> dict:
        """Fidelity of a model's EAP scores against exact single-edge zero ablation (float32) of
        `fidelity_edges` real edges (`fidelity_sampling`: stratified by the base model's mean |EAP| on the
        cell's rows, `base` = (its cache key, its scores), with inverse-inclusion weights; or uniform) on
        its first `fidelity_samples` questions, with a bootstrap CI over questions and edges; the exact
        deltas and the edges' weights are kept for the robustness checks, the difference fidelity and C8's
        causal check. The edges are drawn per base model and dataset (`edge_seed`): both models of a pair
        ablate the same edges, and another base (by its weights) or dataset another draw."""
        cfg = self.config
        k = min(cfg.fidelity_samples, len(rows))
        seed = edge_seed(cfg.fidelity_seed, self.answers(spec.name, dataset).models["base"]["fingerprint"], dataset)
        stratified = cfg.fidelity_sampling == "stratified"

        def compute() -> dict:
            loaded = self.session.model(spec, side)
            samples, subset = first_questions(scores, rows, k)
            chunk, logit_chunk = self.ablation_settings(loaded.model, rows[:k])
            with self.log.stage("fidelity", f"{spec.name} · {side} · {chunk} variants, logits {logit_chunk} "
                                "positions at a time", k * cfg.fidelity_edges, "edge ablations"):
                measured, ablation = fidelity_for_model(
                    loaded.model, samples, subset, n_edges=cfg.fidelity_edges, seed=seed,
                    sampling=cfg.fidelity_sampling, importance=base[1].scores.abs().mean(0) if stratified else None,
                    chunk=chunk, logit_chunk=logit_chunk,
                    threshold=cfg.fidelity_threshold, n_boot=cfg.stats.n_boot,
                    pad_id=scoring_pad_id(loaded.tokenizer), progress=self.progress)
            eap_values, exact_values = fidelity_points(subset, ablation)
            us, vs = [u for u, _ in ablation.edges], [v for _, v in ablation.edges]
            return {**measured.as_dict(), "samples": k, "ids": list(ablation.ids),
                    "edges": [list(e) for e in ablation.edges], "deltas": ablation.delta[:, us, vs].tolist(),
                    "weights": list(ablation.edge_weights), "points": {"eap": eap_values, "exact": exact_values},
                    "settings": {"ablation_chunk": chunk, "logit_chunk": logit_chunk, "dtype": ablation.dtype}}

        key = fidelity_key(eap, k, cfg, seed, base[0] if stratified else None)
        return self.store.json_entry("fidelity", key, compute, fields=FIDELITY_FIELDS)

    # ------------------------------------------------------------ C8: causal check of the ranking

    def causal(self, cell: CellData, side: str = "post") -> dict:
        """C8's causal check on the cell's fidelity questions and edges (the pool whose exact deltas are
        known): EAP's top k, exact ablation's top k and k random pool edges removed together, k in
        `causal_ks` of the pool (harness.circuit.causal.topk_against_exact)."""
        cfg = self.config
        fidelity = cell.fidelity[side]
        scores = cell.post if side == "post" else cell.base
        k = int(fidelity["samples"])
        edges = [tuple(e) for e in fidelity["edges"]]
        ks = causal_ks(len(edges))

        def compute() -> dict:
            loaded = self.session.model(cell.pair, side)
            rows = dict(zip(SIDES, build_eap_rows(cell.selection, cell.token_mode)))[side]
            samples, subset = first_questions(scores, rows, k)
            if list(subset.ids) != list(fidelity["ids"]):   # both read the first k rows
                raise RuntimeError(f"the causal check's questions {subset.ids} are not the fidelity record's "
                                   f"{fidelity['ids']}")
            us, vs = [u for u, _ in edges], [v for _, v in edges]
            with self.log.stage("causal", f"{cell.pair.name} · {cell.dataset} · {side}", 3 * len(ks), "removals"):
                check = topk_against_exact(loaded.model, samples, scores.graph, edges,
                                           subset.scores[:, us, vs].numpy(), np.asarray(fidelity["deltas"]), ks=ks,
                                           seed=cfg.causal_seed, pad_id=scoring_pad_id(loaded.tokenizer),
                                           progress=self.progress)
            return {"side": side, "samples": k, **dataclasses.asdict(check)}

        key = causal_key(cell.provenance["cache_keys"][f"eap_{side}"], fidelity["ids"], fidelity["edges"], ks, cfg)
        return self.store.json_entry("causal", key, compute, fields=CAUSAL_FIELDS)

    # ------------------------------------------------------------ CB1-CB3: edges and behaviour

    def interventions(self, cell: CellData) -> dict:
        """The causal claims on behaviour of the cell's pair (harness.circuit.crossmodel.intervention_curves)
        on the first `behaviour_questions` questions, both models teacher-forced on each one's reference
        solution, edges ranked by the cell's mean EAP scores."""
        cfg = self.config
        answers = self.answers(cell.pair.name, cell.dataset)
        rows = [c.generation for c in answers.post[:cfg.behaviour_questions]]
        missing = [g.problem_id for g in rows if not g.reference_ids]
        if missing:
            raise UserError(f"{cell.dataset}: question {missing[0]} (and {len(missing) - 1} more) has no reference "
                            "solution; the causal claims on behaviour teacher-force one (leave CB1-CB3 out with -k)")
        probes = [Sample(g.problem_id, g.prompt_ids, g.reference_ids) for g in rows]

        def compute() -> dict:
            loaded = {side: self.session.model(cell.pair, side) for side in SIDES}
            runs = 4 + 6 * len(cfg.behaviour_ks)
            with self.log.stage("interventions", f"{cell.pair.name} · {cell.dataset}", runs, "model runs"):
                curves = intervention_curves(loaded["base"].model, loaded["post"].model, probes,
                                             {"base": cell.base.scores.mean(0), "post": cell.post.scores.mean(0)},
                                             cell.post.graph, cfg.behaviour_ks, cfg.behaviour_bins, cfg.behaviour_seed,
                                             scoring_pad_id(loaded["post"].tokenizer))
            return {**curves, "questions": len(probes)}

        keys = cell.provenance["cache_keys"]
        key = interventions_key({s: keys[f"eap_{s}"] for s in SIDES}, keys["answers"], cfg)
        return self.store.json_entry("interventions", key, compute, fields=INTERVENTION_FIELDS)

    # ------------------------------------------------------------ a pair's stages, side by side

    def prepare(self, pair_name: str, datasets: list[str], points: list[tuple[str, float, str]], *,
                causal: bool = False, estimators: tuple[str, ...] = (), interventions: bool = False) -> None:
        """Compute (or read back) the stages of the pair's `datasets` and of its cells at `points`
        (dataset, alpha, token mode) ahead of `cell`: answers, then every EAP, fidelity and
        `estimators` score of the base model, then of the post model, then (`causal`) the C8 check on
        the post model. One side at a time, so a device that holds one model (CUDA) loads each once,
        not at every alpha. A point whose selection leaves no sample is skipped: its cell says so."""
        spec = self.pair(pair_name)
        for dataset in dict.fromkeys(list(datasets) + [d for d, _, _ in points]):
            self.answers(pair_name, dataset)
        asked = [(d, float(a), m) for d, a, m in points]
        measured = [(d, self.measured_at(a), m) for d, a, m in asked]
        selected = []
        for dataset, alpha, mode in dict.fromkeys(asked + measured):
            try:
                selected.append((dataset, alpha, mode, self.selection(pair_name, dataset, alpha)))
            except SelectionError:
                continue
        for index, side in enumerate(SIDES):
            for dataset, alpha, mode, selection in selected:
                rows = build_eap_rows(selection, mode)
                models = self.answers(pair_name, dataset).models
                key, scores = self.edge_scores(spec, side, model_key(models[side]), rows[index])
                if self.measured_at(alpha) == alpha:   # the base's scores are read back from memory
                    base = self.edge_scores(spec, "base", model_key(models["base"]), rows[0])
                    self.fidelity(spec, side, key, scores, rows[index], dataset, base)
                for method in estimators if (dataset, alpha, mode) in asked else ():
                    self.edge_scores(spec, side, model_key(models[side]), rows[index], method)
        # at the alpha fidelity is measured at, for each point that selects (as C8 and CB1-CB3 read them)
        for dataset, alpha, mode in dict.fromkeys((d, self.measured_at(a), m) for d, a, m, _ in selected
                                                  if (d, a, m) in asked) if causal or interventions else ():
            try:
                cell = self.cell(pair_name, dataset, alpha, mode)
            except SelectionError:
                continue
            if causal:
                self.causal(cell, "post")
            if interventions:
                self.interventions(cell)

    def measured_at(self, alpha: float) -> float:
        """The alpha whose fidelity a cell at `alpha` carries (`fidelity_alpha`, else its own)."""
        return float(alpha if self.config.fidelity_alpha is None else self.config.fidelity_alpha)

    # ------------------------------------------------------------ a whole cell

    def cell(self, pair_name: str, dataset: str, alpha: float, token_mode: str = "own") -> CellData:
        """Selection, EAP of both models and their fidelity for one (pair, dataset, alpha, mode).

        With `fidelity_alpha` set, fidelity (and the exact deltas robustness reads) is measured at
        that alpha only; a cell at another alpha carries none (a validity measured at one alpha is not
        copied to another; `CellData.measured_at` names where it was)."""
        memo = (pair_name, dataset, float(alpha), token_mode)
        if memo in self._cells:
            return self._cells[memo]
        spec = self.pair(pair_name)
        validate_token_mode(token_mode)
        answers = self.answers(pair_name, dataset)
        selection = self.selection(pair_name, dataset, alpha)
        rows = dict(zip(SIDES, build_eap_rows(selection, token_mode)))
        measured_at = self.measured_at(alpha)
        scores, fidelity, eap_keys = {}, {}, {}
        for side in SIDES:
            eap_keys[side], scores[side] = self.edge_scores(spec, side, model_key(answers.models[side]), rows[side])
        for side in SIDES if measured_at == float(alpha) else ():
            fidelity[side] = self.fidelity(spec, side, eap_keys[side], scores[side], rows[side], dataset,
                                           (eap_keys["base"], scores["base"]))
        provenance = {
            "pair": {"name": spec.name, "algorithm": spec.algorithm, "algorithm_kind": spec.algorithm_kind,
                     "base": spec.base, "post": spec.post or spec.post_adapter,
                     "training": {"post": training_of(spec.post_adapter), "base": training_of(spec.base_adapter)}},
            "models": answers.models, "data": answers.data, "template": answers.template,
            "decoding": answers.decoding, "answers_source": answers.sources, "audit_config": self.config.as_dict(),
            "config_hash": content_key(self.config.as_dict()),
            "selection": {"variant": selection.params.variant, "t_bar": selection.t_bar,
                          "t_cut": selection.t_cut, "seed": selection.params.seed,
                          "short_answers": selection.params.short_answers,
                          "n_short": len(selection.short_ids)},
            "grader": {"setting": self.config.grader,
                       "resolved": sorted({c.check.grader for c in answers.base + answers.post})},
            "cache_keys": {"answers": answers.key, **{f"eap_{s}": k for s, k in eap_keys.items()}},
            "eap_segments": {s: int(scores[s].meta.get("segments", 1)) for s in SIDES},
            # entries cached before the settings were recorded ran 32 variants over the whole span at once
            "ablation_settings": {s: fidelity[s].get("settings", {"ablation_chunk": DEFAULT_CHUNK, "logit_chunk": None})
                                  for s in fidelity},
        }
        result = CellData(spec, dataset, float(alpha), token_mode, selection, scores["base"], scores["post"],
                          fidelity, provenance, measured_at)
        self._cells[memo] = result
        return result


def model_key(info: dict) -> str:
    """What identifies a model's scores: its weights' fingerprint and, where recorded, its definition
    (config, generation config, tokenizer: an edited config.json computes other scores)."""
    definition = info.get("definition")
    return f"{info['fingerprint']}|{definition}" if definition else info["fingerprint"]


def first_questions(scores: EdgeScores, rows: list[dict], k: int) -> tuple[list[Sample], EdgeScores]:
    """The first k EAP rows as Samples, and the matching slice of their EdgeScores."""
    samples = [Sample.from_row(r) for r in rows[:k]]
    subset = EdgeScores(scores=scores.scores[:k], graph=scores.graph, ids=scores.ids[:k],
                        positions=scores.positions, loss=scores.loss[:k], ablation=scores.ablation,
                        meta=scores.meta)
    return samples, subset
