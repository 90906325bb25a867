"""The pipeline fetches: `PipelineRecords` serves a claim's records (harness.audit.records.Records)
from the audit's stages, computing or reading each back through the cache."""

from __future__ import annotations

from harness.audit.config import AuditConfig
from harness.audit.records import CellData, PairAnswers
from harness.audit.stages import AuditPipeline
from harness.circuit.eap import EdgeScores
from harness.data.selection import SelectionError


class PipelineRecords:
    """The records of an audit run, fetched on first read through its pipeline."""

    def __init__(self, audit: AuditPipeline) -> None:
        self.audit = audit

    @property
    def config(self) -> AuditConfig:
        return self.audit.config

    def kind(self, pair: str) -> str:
        return self.audit.pair(pair).algorithm_kind

    def cell(self, pair: str, dataset: str, alpha: float, token_mode: str) -> CellData | SelectionError:
        try:
            return self.audit.cell(pair, dataset, alpha, token_mode)
        except SelectionError as err:
            return err

    def answers(self, pair: str, dataset: str) -> PairAnswers:
        return self.audit.answers(pair, dataset)

    def causal(self, cell: CellData, side: str) -> dict:
        return self.audit.causal(cell, side)

    def interventions(self, cell: CellData) -> dict:
        return self.audit.interventions(cell)

    def estimates(self, cell: CellData, method: str) -> tuple[EdgeScores, EdgeScores]:
        return self.audit.estimator_scores(cell, method)
