"""Suite wiring, thin over harness.audit: the audit options, the session's pipeline, the run grid
(harness.audit.grid) that parametrises and deselects the claim tests, and each test's judged cell
(its claim's family: every cell of the grid, then Holm)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from harness.audit.claims.common import GridCell
from harness.audit.config import AuditConfig, parse_settings
from harness.audit.grid import GRID_FIELDS, PAIRLESS_GROUP, Families, RunGrid
from harness.audit.stages import AuditPipeline
from harness.errors import UserError
from harness.models.loading import default_dtype
from harness.models.registry import load_registry
from harness.pytest_plugin import SESSION_KEY

GRID_KEY = pytest.StashKey[RunGrid]()
PIPELINE_KEY = pytest.StashKey[AuditPipeline]()
PROGRESS_KEY = pytest.StashKey["WorkerProgress | None"]()


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
    group.addoption("--set", action="append", dest="settings", metavar="KEY=VALUE",
                    help="any audit setting, e.g. stats.sesoi_rel=0.1, metrics.range_policy=joint, decoding=sample "
                         "(repeatable; `python -m harness audit --list-settings` lists them)")
    group.addoption("--grader", default=AuditConfig.grader,
                    help="auto (paper for GSM8K/MATH, the task's scorer for reasoning-gym), paper or lenient")
    group.addoption("--shard", default=None, metavar="I/N",
                    help="run the I-th of N shards (1-based): the grid's pairs dealt round-robin; shards that "
                         "share HARNESS_CACHE split the work, `python -m harness report merge` joins their reports")
    group.addoption("--short-answers", default=AuditConfig.short_answers,
                    help="answers shorter than T_cut: slice (the paper's code), drop or error")


def _usage(fn):
    try:
        return fn()
    except UserError as err:
        raise pytest.UsageError(str(err)) from None


def run_grid(config: pytest.Config) -> RunGrid:
    """The run's grid, built once per session from the options and the registry."""
    if GRID_KEY not in config.stash:
        options = config.stash[SESSION_KEY].options
        registry = _usage(lambda: load_registry(config.getoption("registry")))
        config.stash[GRID_KEY] = _usage(lambda: RunGrid.build(
            registry, pairs=options.pairs, datasets=options.datasets, alphas=options.alphas,
            metrics=options.metrics, token_modes=options.token_mode))
    return config.stash[GRID_KEY]


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Give the suite module its default grid before the claim plugin parametrises it."""
    metafunc.module.CLAIM_GRID = run_grid(metafunc.config).axes()


def grid_cell(item: pytest.Item) -> GridCell:
    params = getattr(item, "callspec", None)
    params = params.params if params else {}
    return GridCell(**{k: params.get(k) for k in GRID_FIELDS})


def claim_of(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("claim")
    return (mark.args[0] if mark.args else mark.kwargs.get("id")) if mark else None


def cell_group(item: pytest.Item) -> str:
    """The item's group (harness.audit.grid.RunGrid.groups): its pair, or the pairless group."""
    return grid_cell(item).pair or PAIRLESS_GROUP


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect cells a claim does not speak about (e.g. C1 on a DPO pair; C4 on an online-RL pair)
    and, with --shard, the other shards' groups; mark each claim test with its group for
    `pytest -n N --dist loadgroup`."""
    grid = run_grid(config)
    shard = _usage(lambda: grid.check_shard(config.getoption("shard"))) if config.getoption("shard") else None
    keep, drop = [], []
    for item in items:
        claim_id = claim_of(item)
        suite_item = Path(str(item.fspath)).parent == Path(__file__).parent
        if suite_item and claim_id is not None:
            if not grid.applies(claim_id, grid_cell(item)) or (
                    shard is not None and grid.shard_of(cell_group(item), shard[1]) != shard[0]):
                drop.append(item)
                continue
            item.add_marker(pytest.mark.xdist_group(cell_group(item)))
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def terminal_line_writer(config: pytest.Config):
    """Write one line to the pytest terminal now, past output capture (as live logging does), so stage
    progress shows without -s; on an xdist worker, to the controller's relay (`WorkerProgress`);
    None when there is no terminal."""
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        relay = worker.get("harness_progress")
        if relay is None:
            return None
        path = Path(relay) / f"{worker['workerid']}.log"

        def write_from_worker(line: str) -> None:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(f"[{worker['workerid']}] {line}\n")

        return write_from_worker
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if terminal is None:
        return None

    def write(line: str) -> None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            if terminal._tw.width_of_current_line:   # after -q's progress characters
                terminal._tw.line()
            terminal.write_line(line)

    return write


class WorkerProgress:
    """The xdist workers' stage lines, shown live by the controller (a worker's own stdout and stderr
    do not reach the terminal): each worker appends lines to `<folder>/<worker id>.log`, and a
    controller thread writes every complete new line to the terminal twice a second."""

    def __init__(self, write) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="harness-progress-"))
        self.write = write
        self.read: dict[Path, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _follow(self) -> None:
        while not self.stop.wait(0.5):
            self.flush()

    def flush(self) -> None:
        for path in sorted(self.folder.glob("*.log")):
            with open(path, "rb") as handle:
                handle.seek(self.read.get(path, 0))
                chunk = handle.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self.read[path] = self.read.get(path, 0) + len(complete)
            for line in complete.decode("utf-8").splitlines():
                self.write(line)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.flush()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist controller: give each worker the folder its stage lines are relayed through."""
    config = node.config
    if PROGRESS_KEY not in config.stash:
        write = terminal_line_writer(config)
        config.stash[PROGRESS_KEY] = WorkerProgress(write) if write is not None else None
    if config.stash[PROGRESS_KEY] is not None:
        node.workerinput["harness_progress"] = str(config.stash[PROGRESS_KEY].folder)


@pytest.fixture(scope="session")
def audit(pytestconfig: pytest.Config) -> AuditPipeline:
    """The session's pipeline: one config, stages cached on disk and in memory."""
    options = pytestconfig.stash[SESSION_KEY].options
    get = pytestconfig.getoption
    config = _usage(lambda: AuditConfig(
        questions=get("questions"), n_select=options.n or AuditConfig.n_select,
        variant=get("selection_variant"), max_new_tokens=get("max_new_tokens"),
        device=options.device or "cpu", dtype=options.dtype or default_dtype(options.device or "cpu"),
        fidelity_threshold=get("fidelity_threshold"), fidelity_edges=get("fidelity_edges"),
        fidelity_samples=get("fidelity_samples"), grader=get("grader"),
        short_answers=get("short_answers")).with_settings(parse_settings(get("settings"))))
    pipeline = AuditPipeline(config, get("registry"), progress=get("capture") == "no",
                             log=terminal_line_writer(pytestconfig))
    pytestconfig.stash[PIPELINE_KEY] = pipeline
    return pipeline


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Put the run's cache ledger (what was computed, read back, healed) in the report's provenance;
    an xdist worker sends its ledger to the controller instead (`pytest_testnodedown`)."""
    relay = session.config.stash.get(PROGRESS_KEY, None)
    if relay is not None:
        relay.close()
    pipeline = session.config.stash.get(PIPELINE_KEY, None)
    if pipeline is None or SESSION_KEY not in session.config.stash:
        return
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["harness_cache"] = pipeline.cache_report()
    else:
        session.config.stash[SESSION_KEY].provenance["cache"] = pipeline.cache_report()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """On the xdist controller: each worker's cache ledger, under provenance.cache.workers."""
    report = getattr(node, "workeroutput", {}).get("harness_cache")
    config = node.config
    if report is not None and SESSION_KEY in config.stash:
        cache = config.stash[SESSION_KEY].provenance.setdefault("cache", {"workers": {}})
        cache["workers"][node.workeroutput.get("workerid", node.gateway.id)] = report


@pytest.fixture(scope="session")
def families(audit: AuditPipeline, request: pytest.FixtureRequest) -> Families:
    claims = tuple(dict.fromkeys(c for c in map(claim_of, request.session.items) if c is not None))
    return Families(audit, run_grid(request.config), claims)


@pytest.fixture
def judged(families: Families, request: pytest.FixtureRequest):
    """This test's CellResult, judged with the rest of its claim's family on the run's grid."""
    return families.result(claim_of(request.node), grid_cell(request.node))


@pytest.fixture
def figure_cell(families: Families, request: pytest.FixtureRequest):
    """The pipeline cell to draw a pair's figure from, or None: once per pair, at its first dataset,
    the largest alpha and the first token mode of the run."""
    g = grid_cell(request.node)
    grid = families.grid
    datasets = grid.figure_datasets(claim_of(request.node), g.pair)
    if not datasets or (g.dataset, g.alpha, g.token_mode) != (datasets[0], max(grid.alphas), grid.token_modes[0]):
        return None
    try:
        return families.audit.cell(g.pair, g.dataset, g.alpha, g.token_mode)
    except UserError:
        return None
