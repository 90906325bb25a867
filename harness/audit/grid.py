"""The run's grid: which pairs, datasets, alpha levels, metrics and token modes it covers, which
cells each claim speaks about, and the families of cells judged together.

Axes come from the options where given, else the registry's bundled pairs (the tiny test models
left out) and their datasets. The suites parametrise their tests from `RunGrid.axes()`. A claim's
family is fixed by the grid (`RunGrid.family`), so `-k` changes which cells are shown, never a
cell's corrected p-value.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

from harness.analysis.metrics import METRICS
from harness.audit.claims import CLAIMS_BY_ID, family_rule
from harness.audit.claims.common import FamilyContext, GridCell
from harness.audit.stages import AuditPipeline
from harness.audit.verdicts import CellResult
from harness.data.problems import dataset_spec
from harness.errors import UserError
from harness.models.registry import ONLINE_RL, SEED_CONTROL, PairSpec

DEFAULT_ALPHAS = (0.1, 0.3, 0.5)
DEFAULT_METRICS = ("intensity", "complexity", "kurtosis")
DEFAULT_TOKEN_MODES = ("own",)
GRID_FIELDS = GridCell._fields


@dataclass(frozen=True)
class RunGrid:
    """The run's axes over a registry. explicit_datasets: the datasets were chosen by option, so every
    pair is run on them (otherwise each pair on its own registry datasets)."""

    pairs: tuple[str, ...]
    datasets: tuple[str, ...]
    alphas: tuple[float, ...]
    metrics: tuple[str, ...]
    token_modes: tuple[str, ...]
    registry: dict[str, PairSpec]
    explicit_datasets: bool

    @classmethod
    def build(cls, registry: dict[str, PairSpec], *, pairs: tuple[str, ...] = (), datasets: tuple[str, ...] = (),
              alphas: tuple[float, ...] = (), metrics: tuple[str, ...] = (),
              token_modes: tuple[str, ...] = ()) -> RunGrid:
        """The grid from the given axes (empty: the default); unknown names raise a UserError."""
        bundled = [p for p in registry.values() if p.bundled and not p.base.startswith("tiny:")]
        pairs = pairs or tuple(p.name for p in bundled)
        unknown = [p for p in pairs if p not in registry]
        if unknown:
            raise UserError(f"--pairs: unknown {', '.join(unknown)}; known pairs: {', '.join(registry)}")
        explicit = bool(datasets)
        datasets = datasets or tuple(dict.fromkeys(d for p in pairs for d in registry[p].datasets))
        for d in datasets:
            dataset_spec(d)
        metrics = metrics or DEFAULT_METRICS
        bad = [m for m in metrics if m not in METRICS]
        if bad:
            raise UserError(f"--metrics: unknown {', '.join(bad)}; known metrics: {', '.join(METRICS)}")
        alphas = tuple(alphas or DEFAULT_ALPHAS)
        repeated = sorted({a for a in alphas if alphas.count(a) > 1})
        if repeated:
            raise UserError(f"--alphas: {', '.join(map(str, repeated))} given twice; give each alpha once")
        return cls(tuple(pairs), tuple(datasets), alphas, tuple(metrics),
                   tuple(token_modes or DEFAULT_TOKEN_MODES), registry, explicit)

    def axes(self) -> dict[str, list]:
        """Values of each test argument (GRID_FIELDS) for the suites' parametrisation."""
        return {"pair": list(self.pairs), "dataset": list(self.datasets), "alpha": list(self.alphas),
                "metric": list(self.metrics), "token_mode": list(self.token_modes)}

    def applies(self, claim_id: str, g: GridCell) -> bool:
        """Does this claim read this pair (by algorithm kind; a seed control is read by every claim
        that reads online RL) and this pair's dataset?"""
        if g.pair is None:
            return True
        spec = self.registry[g.pair]
        reads = CLAIMS_BY_ID[claim_id].reads
        kind = ONLINE_RL if spec.algorithm_kind == SEED_CONTROL else spec.algorithm_kind
        if reads is not None and kind not in reads:
            return False
        return g.dataset is None or self.explicit_datasets or g.dataset in spec.datasets

    def is_control(self, g: GridCell) -> bool:
        """Is the cell's pair a seed control (two runs of one algorithm, differing only in the seed)?"""
        return g.pair is not None and self.registry[g.pair].algorithm_kind == SEED_CONTROL

    def rl_pairs(self) -> tuple[str, ...]:
        return tuple(p for p in self.pairs if self.registry[p].algorithm_kind == ONLINE_RL)

    def experiments(self) -> tuple[tuple[str, str, float], ...]:
        """(online-RL pair, dataset, alpha) triples that C6 counts."""
        return tuple((p, d, a) for p in self.rl_pairs() for d in self.datasets for a in self.alphas
                     if self.applies("C6", GridCell(p, d)))

    def context(self) -> FamilyContext:
        return FamilyContext(self.rl_pairs(), self.alphas, self.experiments())

    def family(self, claim_id: str, control: bool = False) -> list[GridCell]:
        """Every cell of the claim on this grid, in test order: its Holm family, whatever -k runs.
        The seed-control cells are a family of their own (`control=True`), so the control never
        changes a real cell's correction."""
        axes = CLAIMS_BY_ID[claim_id].axes
        values = {"pair": self.pairs, "dataset": self.datasets, "alpha": self.alphas, "metric": self.metrics,
                  "token_mode": self.token_modes}
        cells = [GridCell(**dict(zip(axes, combo))) for combo in itertools.product(*(values[a] for a in axes))]
        return [g for g in cells if self.applies(claim_id, g) and self.is_control(g) == control]

    def figure_datasets(self, claim_id: str, pair: str) -> list[str]:
        return [d for d in self.datasets if self.applies(claim_id, GridCell(pair, d))]


class Families:
    """Judges each claim's family once per session: every cell of the claim on the run's grid, then
    Holm within them. `-k` chooses which cells run and are shown, never what a cell is corrected for."""

    def __init__(self, audit: AuditPipeline, grid: RunGrid) -> None:
        self.audit, self.grid = audit, grid
        self.done: dict[str, dict[GridCell, CellResult]] = {}

    def result(self, claim_id: str, cell: GridCell) -> CellResult:
        """The CellResult of `cell`, judged with the rest of its claim's family on first use (the
        seed-control cells as their own family, each marked `extra.control`)."""
        if claim_id not in self.done:
            judge = family_rule(claim_id)
            self.done[claim_id] = judge(self.audit, claim_id, self.grid.family(claim_id), self.grid.context())
            controls = self.grid.family(claim_id, control=True)
            if controls:
                judged = judge(self.audit, claim_id, controls, self.grid.context())
                self.done[claim_id].update({g: dataclasses.replace(r, extra={**r.extra, "control": "seed"})
                                            for g, r in judged.items()})
        if cell not in self.done[claim_id]:
            raise UserError(f"cell {cell} of {claim_id} is not on the run's grid")
        return self.done[claim_id][cell]
