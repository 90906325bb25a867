"""Suite wiring: audit options, the session's pipeline, default grids from the pair registry, which
pairs each claim reads, and the per-claim family computation (all selected cells, then Holm)."""

from __future__ import annotations

from pathlib import Path

import pytest



from harness.audit.claims.families import (CLAIM_KINDS, GridCell, accuracy_family, diversity_family, dpo_family,
                      fade_family, fidelity_family, metric_family)

from harness.errors import UserError
from harness.analysis.metrics import METRICS
from harness.audit.config import AuditConfig
from harness.audit.stages import AuditPipeline
from harness.data.problems import dataset_spec
from harness.models.registry import ONLINE_RL
from harness.pytest_plugin import SESSION_KEY
from harness.models.registry import load_registry

DEFAULT_ALPHAS = (0.1, 0.3, 0.5)
DEFAULT_METRICS = ("intensity", "complexity", "kurtosis")
DEFAULT_TOKEN_MODES = ("own",)
GRID_FIELDS = GridCell._fields
GRID_KEY = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("claims")
    group.addoption("--registry", default=None, help="pair registry TOML (default: fixtures/pairs.toml)")
    group.addoption("--questions", type=int, default=AuditConfig.questions,
                    help=f"problems answered per dataset (default {AuditConfig.questions})")
    group.addoption("--max-new-tokens", type=int, default=None, help="answer budget (default: the pair's)")
    group.addoption("--selection-variant", default=AuditConfig.variant, help="paper or paper-code")
    group.addoption("--fidelity-threshold", type=float, default=AuditConfig.fidelity_threshold,
                    help="a cell is INVALID when EAP-vs-ablation Spearman is below this")
    group.addoption("--fidelity-edges", type=int, default=AuditConfig.fidelity_edges,
                    help="edges sampled per model for the fidelity check")
    group.addoption("--fidelity-samples", type=int, default=AuditConfig.fidelity_samples,
                    help="questions per model for the fidelity check")


def _usage(fn):
    try:
        return fn()
    except UserError as err:
        raise pytest.UsageError(str(err)) from None


def run_grid(config: pytest.Config) -> dict:
    """The run's axes: options where given, else the registry's bundled pairs (the tiny test models
    left out) and their datasets."""
    if GRID_KEY in config.stash:
        return config.stash[GRID_KEY]
    options = config.stash[SESSION_KEY].options
    registry = _usage(lambda: load_registry(config.getoption("registry")))
    bundled = [p for p in registry.values() if p.bundled and not p.base.startswith("tiny:")]
    pairs = options.pairs or tuple(p.name for p in bundled)
    unknown = [p for p in pairs if p not in registry]
    if unknown:
        raise pytest.UsageError(f"--pairs: unknown {', '.join(unknown)}; known pairs: {', '.join(registry)}")
    datasets = options.datasets or tuple(dict.fromkeys(d for p in pairs for d in registry[p].datasets))
    for d in datasets:
        _usage(lambda: dataset_spec(d))
    metrics = options.metrics or DEFAULT_METRICS
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise pytest.UsageError(f"--metrics: unknown {', '.join(bad)}; known metrics: {', '.join(METRICS)}")
    grid = {"pair": tuple(pairs), "dataset": tuple(datasets), "alpha": options.alphas or DEFAULT_ALPHAS,
            "metric": tuple(metrics), "token_mode": options.token_mode or DEFAULT_TOKEN_MODES,
            "registry": registry, "explicit_datasets": bool(options.datasets)}
    config.stash[GRID_KEY] = grid
    return grid


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Give the suite module its default grid before the claim plugin parametrises it."""
    grid = run_grid(metafunc.config)
    metafunc.module.CLAIM_GRID = {k: list(grid[k]) for k in GRID_FIELDS}


def applies(claim_id: str, g: GridCell, grid: dict) -> bool:
    """Does this claim read this pair (by algorithm kind) and this pair's dataset?"""
    registry = grid["registry"]
    if g.pair is None:
        return True
    spec = registry[g.pair]
    if claim_id in CLAIM_KINDS and spec.algorithm_kind not in CLAIM_KINDS[claim_id]:
        return False
    return g.dataset is None or grid["explicit_datasets"] or g.dataset in spec.datasets


def grid_cell(item: pytest.Item) -> GridCell:
    params = getattr(item, "callspec", None)
    params = params.params if params else {}
    return GridCell(**{k: params.get(k) for k in GRID_FIELDS})


def claim_of(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("claim")
    return (mark.args[0] if mark.args else mark.kwargs.get("id")) if mark else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect cells a claim does not speak about (e.g. C1 on a DPO pair; C4 on an online-RL pair)."""
    grid = run_grid(config)
    keep, drop = [], []
    for item in items:
        claim_id = claim_of(item)
        suite_item = Path(str(item.fspath)).parent == Path(__file__).parent
        (keep if not suite_item or claim_id is None or applies(claim_id, grid_cell(item), grid) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def audit(pytestconfig: pytest.Config) -> AuditPipeline:
    """The session's pipeline: one config, stages cached on disk and in memory."""
    options = pytestconfig.stash[SESSION_KEY].options
    get = pytestconfig.getoption
    config = _usage(lambda: AuditConfig(
        questions=get("questions"), n_select=options.n or AuditConfig.n_select,
        variant=get("selection_variant"), max_new_tokens=get("max_new_tokens"),
        device=options.device or "cpu", dtype=options.dtype or "float32",
        fidelity_threshold=get("fidelity_threshold"), fidelity_edges=get("fidelity_edges"),
        fidelity_samples=get("fidelity_samples")))
    return AuditPipeline(config, get("registry"), progress=get("capture") == "no")


class Families:
    """Computes each claim's family once per session over the claim's selected cells."""

    def __init__(self, audit: AuditPipeline, session: pytest.Session, grid: dict) -> None:
        self.audit, self.session, self.grid = audit, session, grid
        self.done: dict[str, dict] = {}

    def selected(self, claim_id: str) -> list[GridCell]:
        return [grid_cell(i) for i in self.session.items if claim_of(i) == claim_id]

    def result(self, item: pytest.Item):
        claim_id = claim_of(item)
        if claim_id not in self.done:
            self.done[claim_id] = self._compute(claim_id, self.selected(claim_id))
        return self.done[claim_id][grid_cell(item)]

    def rl_pairs(self) -> list[str]:
        registry = self.grid["registry"]
        return [p for p in self.grid["pair"] if registry[p].algorithm_kind == ONLINE_RL]

    def experiments(self) -> list[tuple[str, str, float]]:
        return [(p, d, a) for p in self.rl_pairs() for d in self.grid["dataset"] for a in self.grid["alpha"]
                if applies("C6", GridCell(p, d), self.grid)]

    def _compute(self, claim_id: str, cells: list[GridCell]) -> dict:
        if claim_id in ("C1", "C2", "C3", "C7"):
            return metric_family(self.audit, claim_id, cells)
        if claim_id == "C4":
            return dpo_family(self.audit, cells, self.rl_pairs())
        if claim_id == "C5":
            return fade_family(self.audit, cells, list(self.grid["alpha"]))
        if claim_id == "C6":
            return diversity_family(self.audit, cells, self.experiments())
        if claim_id == "C8":
            return fidelity_family(self.audit, cells)
        if claim_id == "C9":
            return accuracy_family(self.audit, cells)
        raise UserError(f"no family computation for claim {claim_id}")


@pytest.fixture(scope="session")
def families(audit: AuditPipeline, request: pytest.FixtureRequest) -> Families:
    return Families(audit, request.session, run_grid(request.config))


@pytest.fixture
def judged(families: Families, request: pytest.FixtureRequest):
    """This test's CellResult, judged with the rest of its claim's family."""
    return families.result(request.node)


@pytest.fixture
def figure_cell(families: Families, request: pytest.FixtureRequest):
    """The pipeline cell to draw a pair's figure from, or None: once per pair, at its first dataset,
    the largest alpha and the first token mode of the run."""
    g = grid_cell(request.node)
    grid = families.grid
    datasets = [d for d in grid["dataset"] if applies(claim_of(request.node), GridCell(g.pair, d), grid)]
    if not datasets or (g.dataset, g.alpha, g.token_mode) != (datasets[0], max(grid["alpha"]), grid["token_mode"][0]):
        return None
    try:
        return families.audit.cell(g.pair, g.dataset, g.alpha, g.token_mode)
    except UserError:
        return None
