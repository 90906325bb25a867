"""The records a claim reads, and where it reads them from.

A claim's rule never runs a stage: it reads plain records through a `Records` source. The audit's
source fetches them through the cache and the stages (`harness.audit.collect.PipelineRecords`);
`PlainRecords` serves records held in dicts, so a rule can be decided on planted data with no
pipeline, model or cache.

    PairAnswers  both models' checked answers to one dataset (C9)
    CellData     one (pair, dataset, alpha, token mode): selection, EAP of both models, fidelity
    causal       C8's loss with the top-k EAP edges vs k random edges removed, per question
    interventions  the causal claims on behaviour: edges patched between the models or removed, and
                 the log-probability of the correct answer (harness.circuit.crossmodel.intervention_curves)
    estimates    (base, post) scores of a cell's rows by another estimator (robustness)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from harness.audit.config import AuditConfig
from harness.circuit.eap import EdgeScores
from harness.data.generation import Generation
from harness.data.grading import Check, CheckedGeneration
from harness.data.selection import FunnelStep, Selection, SelectionError
from harness.errors import UserError
from harness.models.registry import PairSpec

SIDES = ("base", "post")


@dataclass(frozen=True)
class PairAnswers:
    """Both models' checked greedy answers to the same problems, with what produced them."""

    pair: str
    dataset: str
    base: tuple[CheckedGeneration, ...]
    post: tuple[CheckedGeneration, ...]
    models: dict[str, dict]   # "base"/"post" -> ModelInfo fields (fingerprint, source, ...)
    data: dict                # problem-set provenance (name, revision, n, config)
    template: str
    decoding: dict
    key: str
    sources: dict[str, dict]  # "base"/"post" -> where the answers came from (fixture, verified, or generated)

    def to_json(self) -> dict:
        return {side: [{"generation": c.generation.to_json(), "check": dataclasses.asdict(c.check)}
                       for c in getattr(self, side)] for side in SIDES} | {
            "models": self.models, "data": self.data, "template": self.template, "decoding": self.decoding,
            "sources": self.sources}

    @classmethod
    def from_json(cls, raw: dict, pair: str, dataset: str, key: str) -> "PairAnswers":
        rows = {side: tuple(CheckedGeneration(Generation.from_json(r["generation"]), Check(**r["check"]))
                            for r in raw[side]) for side in SIDES}
        return cls(pair, dataset, rows["base"], rows["post"], raw["models"], raw["data"], raw["template"],
                   raw["decoding"], key, raw.get("sources", {}))


@dataclass(frozen=True)
class CellData:
    """Everything a claim needs for one (pair, dataset, alpha, token mode).

    base/post: EdgeScores of each model on its rows (same question order). fidelity: per model the
    fidelity record (the fields of `harness.circuit.fidelity.Fidelity` plus "samples", the measured
    "ids", "edges" and exact "deltas" [questions][edges]), measured at alpha `measured_at`.
    """

    pair: PairSpec
    dataset: str
    alpha: float
    token_mode: str
    selection: Selection
    base: EdgeScores
    post: EdgeScores
    fidelity: dict[str, dict]
    provenance: dict[str, Any]
    measured_at: float

    @property
    def n(self) -> int:
        return len(self.selection.ids)

    @property
    def funnel(self) -> list[dict]:
        return funnel_rows(self.selection.funnel)


def funnel_rows(steps: Sequence[FunnelStep]) -> list[dict]:
    """A selection funnel as report rows: [{"stage", "n", "rule"}] after each filter."""
    return [{"stage": s.step, "n": s.count, "rule": s.rule} for s in steps]


class Records(Protocol):
    """What a claim's rule reads: the run's settings and, by key, the records of its family."""

    config: AuditConfig

    def kind(self, pair: str) -> str:
        """The pair's algorithm kind (harness.models.registry.ALGORITHM_KINDS)."""

    def cell(self, pair: str, dataset: str, alpha: float, token_mode: str) -> CellData | SelectionError:
        """The cell's data, or the SelectionError of a selection that kept no question."""

    def answers(self, pair: str, dataset: str) -> PairAnswers:
        """Both models' checked answers to the dataset."""

    def causal(self, cell: CellData, side: str) -> dict:
        """C8's causal check of `side`'s model on the cell's fidelity pool (harness.circuit.causal.topk_against_exact)."""

    def estimates(self, cell: CellData, method: str) -> tuple[EdgeScores, EdgeScores]:
        """(base, post) scores of the cell's rows by the estimator `method`."""

    def interventions(self, cell: CellData) -> dict:
        """The restore, install and necessity curves of the cell's pair, edges ranked by the cell's EAP."""


@dataclass
class PlainRecords:
    """A `Records` source over dicts: cells keyed (pair, dataset, alpha, token mode), answers (pair,
    dataset), causal, intervention records and estimates (pair, dataset, alpha, token mode[, method]); kinds by pair.
    A missing key is a UserError naming it."""

    config: AuditConfig = field(default_factory=AuditConfig)
    kinds: dict[str, str] = field(default_factory=dict)
    cells: dict[tuple, Any] = field(default_factory=dict)
    answer_sets: dict[tuple, Any] = field(default_factory=dict)
    causal_records: dict[tuple, dict] = field(default_factory=dict)
    estimator_scores: dict[tuple, tuple] = field(default_factory=dict)
    intervention_records: dict[tuple, dict] = field(default_factory=dict)

    def kind(self, pair: str) -> str:
        return self._get(self.kinds, pair, "algorithm kind")

    def cell(self, pair: str, dataset: str, alpha: float, token_mode: str) -> Any:
        return self._get(self.cells, (pair, dataset, float(alpha), token_mode), "cell")

    def answers(self, pair: str, dataset: str) -> Any:
        return self._get(self.answer_sets, (pair, dataset), "answers")

    def causal(self, cell: Any, side: str) -> dict:
        return self._get(self.causal_records, (cell.pair.name, cell.dataset, cell.alpha, cell.token_mode), "causal")

    def estimates(self, cell: Any, method: str) -> tuple:
        key = (cell.pair.name, cell.dataset, cell.alpha, cell.token_mode, method)
        return self._get(self.estimator_scores, key, "estimates")

    def interventions(self, cell: Any) -> dict:
        key = (cell.pair.name, cell.dataset, cell.alpha, cell.token_mode)
        return self._get(self.intervention_records, key, "interventions")

    @staticmethod
    def _get(table: dict, key: Any, what: str) -> Any:
        try:
            return table[key]
        except KeyError:
            raise UserError(f"no {what} record for {key!r}") from None
