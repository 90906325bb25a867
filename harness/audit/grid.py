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
from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.claims.alpha_fade import MIN_ALPHAS
from harness.audit.claims.common import FamilyContext, GridCell
from harness.audit.claims.family import judge_claim
from harness.audit.collect import PipelineRecords
from harness.audit.stages import AuditPipeline
from harness.audit.verdicts import CellResult, cell_id_part
from harness.data.problems import dataset_spec
from harness.errors import UserError
from harness.files import content_key
from harness.models.registry import ONLINE_RL, SEED_CONTROL, PairSpec

DEFAULT_ALPHAS = (0.1, 0.3, 0.5)
DEFAULT_METRICS = ("intensity", "complexity", "kurtosis")
DEFAULT_TOKEN_MODES = ("own",)
GRID_FIELDS = GridCell._fields


PAIRLESS_GROUP = "grid"   # the group of cells with no pair (C6 reads every online-RL pair)


def check_distinct(flag: str, names: tuple) -> None:
    """Each grid value once, and no two whose cell-id parts are the same (`tiny-rl` and `tiny.rl` both
    read `tiny_rl`): a repeat would count cells twice in Holm's family, a collision would overwrite
    cells. Either is a UserError naming them."""
    seen: dict[str, object] = {}
    for name in names:
        part = cell_id_part(name)
        if part in seen:
            clash = "is given twice" if seen[part] == name else f"and {seen[part]!r} share the cell-id part {part!r}"
            raise UserError(f"{flag}: {name!r} {clash}; give each once, under names that differ in letters or digits")
        seen[part] = name


def parse_shard(text: str) -> tuple[int, int]:
    """(i, N) of `--shard i/N`, 1 <= i <= N; anything else raises a UserError."""
    head, _, tail = str(text).partition("/")
    if not (head.strip().isdigit() and tail.strip().isdigit()) or not 1 <= int(head) <= int(tail):
        raise UserError(f"--shard {text!r}: give i/N with 1 <= i <= N, e.g. --shard 1/4")
    return int(head), int(tail)


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
        for flag, given in (("--pairs", pairs), ("--datasets", datasets), ("--metrics", metrics),
                            ("--token-mode", token_modes)):
            check_distinct(flag, given)
        pairs = pairs or tuple(p.name for p in bundled)
        unknown = [p for p in pairs if p not in registry]
        if unknown:
            raise UserError(f"--pairs: unknown {', '.join(unknown)}; known pairs: {', '.join(registry)}")
        explicit = bool(datasets)
        datasets = datasets or tuple(dict.fromkeys(d for p in pairs for d in registry[p].datasets))
        if not datasets:   # finding u20: the reason was a pytest collection error on stdout
            raise UserError(f"--pairs {', '.join(pairs)}: no dataset to audit; give --datasets or list the pairs' "
                            "datasets in the registry")
        for d in datasets:
            dataset_spec(d)
        metrics = metrics or DEFAULT_METRICS
        bad = [m for m in metrics if m not in METRICS]
        if bad:
            raise UserError(f"--metrics: unknown {', '.join(bad)}; known metrics: {', '.join(METRICS)}")
        alphas = tuple(alphas or DEFAULT_ALPHAS)
        check_distinct("--alphas", alphas)
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

    def experiments(self, claim_id: str) -> tuple[tuple[str, str, float], ...]:
        """(online-RL pair, dataset, alpha) triples of the grid that the claim reads (C6 counts them)."""
        return tuple((p, d, a) for p in self.rl_pairs() for d in self.datasets for a in self.alphas
                     if self.applies(claim_id, GridCell(p, d)))

    def context(self, claim_id: str) -> FamilyContext:
        """What the claim's rule reads beyond its own cells (harness.audit.claims.common.FamilyContext)."""
        return FamilyContext(self.rl_pairs(), self.alphas, self.experiments(claim_id))

    def off_grid(self) -> dict[str, str]:
        """Claims this grid cannot test, with why (they get no cells): a claim about how a change moves
        across alpha (direction `fades`) on a grid of fewer than MIN_ALPHAS alphas."""
        alphas = ", ".join(f"{a:g}" for a in self.alphas)
        return {c.id: f"needs at least {MIN_ALPHAS} alphas (it reads how a change moves across them); this grid "
                      f"has {alphas} (--alphas)"
                for c in CLAIMS_BY_ID.values() if c.direction == "fades" and len(self.alphas) < MIN_ALPHAS}

    def cells(self, claim_id: str) -> list[GridCell]:
        """Every cell of the claim on this grid that it speaks about (seed controls included), in test
        order: the product of its axes; none for a claim `off_grid`."""
        if claim_id in self.off_grid():
            return []
        axes = CLAIMS_BY_ID[claim_id].axes
        values = {"pair": self.pairs, "dataset": self.datasets, "alpha": self.alphas, "metric": self.metrics,
                  "token_mode": self.token_modes}
        cells = [GridCell(**dict(zip(axes, combo))) for combo in itertools.product(*(values[a] for a in axes))]
        return [g for g in cells if self.applies(claim_id, g)]

    def family(self, claim_id: str, control: bool = False) -> list[GridCell]:
        """The claim's cells that are corrected together: its Holm family, whatever -k runs. The
        seed-control cells are a family of their own (`control=True`), so the control never changes
        a real cell's correction."""
        return [g for g in self.cells(claim_id) if self.is_control(g) == control]

    def group(self, g: GridCell) -> str:
        """The group a cell runs in (`groups`): its pair, or the pairless group."""
        return g.pair or PAIRLESS_GROUP

    def groups(self) -> list[str]:
        """The groups cells are run in, one per pair (so a worker or shard loads a pair's models
        once) and one for the cells of no pair, in grid order."""
        return [*self.pairs, PAIRLESS_GROUP]

    def check_shard(self, text: str) -> tuple[int, int]:
        """(i, N) of `--shard i/N`, refused (UserError) when malformed or N exceeds the grid's groups."""
        index, shards = parse_shard(text)
        groups = len(self.groups())
        if shards > groups:
            raise UserError(f"--shard {text}: the grid has {groups} groups of cells (one per pair, one for the "
                            f"cells of no pair); use at most {groups} shards")
        return index, shards

    def shard_of(self, group: str, shards: int) -> int:
        """The 1-based shard of `shards` that runs `group`: groups dealt round-robin in grid order."""
        return self.groups().index(group) % shards + 1

    def figure_datasets(self, claim_id: str, pair: str) -> list[str]:
        return [d for d in self.datasets if self.applies(claim_id, GridCell(pair, d))]


def pair_lease(spec: PairSpec) -> str:
    """The name of the lease a process holds while it prepares this pair's stages."""
    return f"pair-{content_key(repr(spec))}"


class Families:
    """Judges each claim's family once per session: every cell of the claim on the run's grid, then
    Holm within them. `-k` chooses which cells run and are shown, never what a cell is corrected for.

    Before a family is judged, every pair's stages are prepared (`prepare_pairs`), each under a lease
    in the shared cache: processes on one cache (xdist workers, `--shard` runs) each take the pairs
    no other is preparing, then wait for the rest and read them back. Each family is then judged
    from the same cached stages in every process, so a cell is the same whichever process runs it.
    claims: the claim ids this session judges (default: every claim with a family rule); a pair's
    stages are those these claims read.
    """

    def __init__(self, audit: AuditPipeline, grid: RunGrid, claims: tuple[str, ...] | None = None) -> None:
        self.audit, self.grid = audit, grid
        self.records = PipelineRecords(audit)
        self.claims = tuple(c for c in (claims or CLAIMS_BY_ID) if CLAIMS_BY_ID[c].rule is not None)
        self.done: dict[str, dict[GridCell, CellResult]] = {}
        self.prepared: set[str] = set()

    def result(self, claim_id: str, cell: GridCell) -> CellResult:
        """The CellResult of `cell`, judged with the rest of its claim's family on first use (the
        seed-control cells as their own family, each marked `extra.control`)."""
        if claim_id not in self.done:
            self.prepare_pairs(first=cell.pair)
            claim, context = CLAIMS_BY_ID[claim_id], self.grid.context(claim_id)
            self.done[claim_id] = judge_claim(claim, self.records, self.grid.family(claim_id), context)
            controls = self.grid.family(claim_id, control=True)
            if controls:
                judged = judge_claim(claim, self.records, controls, context)
                self.done[claim_id].update({g: dataclasses.replace(r, extra={**r.extra, "control": "seed"})
                                            for g, r in judged.items()})
        if cell not in self.done[claim_id]:
            raise UserError(f"cell {cell} of {claim_id} is not on the run's grid")
        return self.done[claim_id][cell]

    def prepare_pairs(self, first: str | None = None) -> None:
        """Prepare every pair of the grid: `first` (the running cell's pair) and each pair whose lease
        is free, then, waiting on their leases, the pairs other processes are preparing."""
        order = ([first] if first in self.grid.pairs else []) + [p for p in self.grid.pairs if p != first]
        busy = [pair for pair in order if not self.prepare(pair, wait=False)]
        for pair in busy:
            self.prepare(pair)

    def prepare(self, pair: str, wait: bool = True) -> bool:
        """Compute (or read back) the stages of `pair` this session's claims read, holding the pair's
        lease: True when done; False at once when `wait` is False and another process holds it."""
        if pair in self.prepared:
            return True
        datasets, points, causal, estimators, interventions = self.stages_of(pair)
        if datasets:
            with self.audit.store.lease(pair_lease(self.grid.registry[pair]), wait=wait) as held:
                if not held:
                    return False
                try:
                    self.audit.prepare(pair, datasets, points, causal=causal, estimators=estimators,
                                       interventions=interventions)
                except Exception:   # noqa: BLE001 - each stage remembers its failure; the judge that
                    pass            # reads the stage raises it again and reports it as its cells'
        self.prepared.add(pair)
        return True

    def stages_of(self, pair: str) -> tuple[list[str], list[tuple[str, float, str]], bool, tuple[str, ...], bool]:
        """(datasets, cells as (dataset, alpha, token mode), whether C8's causal check, extra
        estimators, whether the interventions of CB1-CB3) that this session's claims need of `pair`,
        from what each claim declares it needs (ClaimSpec.needs): answers alone, or cells at every
        grid alpha and token mode."""
        datasets, points, causal, estimates, interventions = [], [], False, False, False
        for dataset in self.grid.datasets:
            needs = {n for c in self.claims if self.grid.applies(c, GridCell(pair, dataset))
                     for n in CLAIMS_BY_ID[c].needs}
            if not needs:
                continue
            datasets.append(dataset)
            if needs & {"cells", "causal", "estimates", "interventions"}:
                points += [(dataset, a, m) for a in self.grid.alphas for m in self.grid.token_modes]
            causal = causal or "causal" in needs
            estimates = estimates or "estimates" in needs
            interventions = interventions or "interventions" in needs
        lookahead = estimates and self.audit.config.robustness_estimator == "lookahead"
        return datasets, points, causal, ("lookahead",) if lookahead else (), interventions
