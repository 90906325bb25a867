"""pytest plugin for claim audits, the one place every hook and option lives: the `claim` marker, the
run's grid and the audit's settings, the `point` parametrisation of the claim suites (one test per
cell of every catalogued claim), the `claim_cell` fixture, verdict-shaped outcomes, stage progress,
the terminal claim matrix, the reports and the baseline check.

Outcome of a test that records a cell:
  SUPPORTED -> passed; REFUTED -> failed; INCONCLUSIVE -> skipped with its reason, counted as
  "inconclusive" (the data decided nothing: not a failure); INVALID -> error. A cell whose verdict differs from `--claims-baseline` (or whose effect drifted
  beyond `--claims-compare-fail`) fails whatever its verdict.
A claim test that raises (in its fixtures or its body) or records nothing still gives its cell:
INVALID, reason "error in <stage>: <ExceptionType>: <message>", `extra.error` saying where.
Reports go to `<reports-dir>/<run-id>/` at the end of a session that recorded anything; a run id
whose folder exists is refused unless `--overwrite` (which clears the old report at the start).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import itertools
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from harness.audit.claims import CLAIMS_BY_ID, ClaimSpec, add_papers
from harness.audit.claims.common import GridCell, cell_id
from harness.audit.config import AuditConfig, parse_alphas, parse_settings, parse_token_modes
from harness.audit.verdicts import CellResult, Verdict, alpha_tag, make_cell_id
from harness.data.generation import DecodingSettings
from harness.data.selection import TOKEN_MODES, SelectionSettings
from harness.errors import UserError
from harness.report import plots
from harness.report.compare import DriftLimit, baseline_problems
from harness.report.document import ClaimsRun, Figure, load_claims, run_provenance
from harness.report.matrix import SEVERITY, build_matrix, claim_answer, claim_label, control_summary
from harness.report.writers import cell_properties, write_reports

if TYPE_CHECKING:   # the pipeline imports torch: loaded only by a run with claim suites
    from harness.audit.grid import Families, RunGrid
    from harness.audit.records import CellData
    from harness.audit.stages import AuditPipeline

# Test arguments the plugin parametrises from the command line, in id order.
GRID_ARGS = ("pair", "dataset", "alpha", "metric", "token_mode")
GRID_OPTIONS = {"pair": "pairs", "dataset": "datasets", "alpha": "alphas", "metric": "metrics",
                "token_mode": "token_mode"}
TERMINAL_COLOURS = {Verdict.SUPPORTED: "green", Verdict.REFUTED: "red",
                    Verdict.INCONCLUSIVE: "yellow", Verdict.INVALID: "purple"}
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
REPORT_FILES = ("claims.json", "claims.md", "claims.html", "claims-junit.xml")
HARNESS_ROOT = Path(__file__).resolve().parents[1]
ERROR_RULE = ("INVALID: the claim test raised before it recorded its cell (or recorded none), so the cell "
              "could not be judged; extra.error names the stage and the exception")


def default_run_id() -> str:
    """UTC time to the microsecond and the process id, e.g. 20260101-120000-123456-p4242: two runs
    started in the same second (or on the same microsecond, in two processes) get distinct ids."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S-%f") + f"-p{os.getpid()}"


class InvalidCell(Exception):
    """Raised by `claim_cell.record` for an INVALID cell; pytest reports it as an error."""


@dataclass(frozen=True)
class ClaimOptions:
    """Parsed command-line options; grid lists are empty when not given."""

    pairs: tuple[str, ...]
    datasets: tuple[str, ...]
    alphas: tuple[float, ...]
    metrics: tuple[str, ...]
    token_mode: tuple[str, ...]
    n: int | None
    device: str | None
    dtype: str | None
    run_id: str
    reports_dir: Path
    baseline_path: Path | None
    drift_limits: tuple[DriftLimit, ...]
    config: AuditConfig
    overwrite: bool = False

    @property
    def run_dir(self) -> Path:
        return self.reports_dir / self.run_id


@dataclass
class ClaimSession:
    options: ClaimOptions
    baseline: dict[str, CellResult]
    provenance: dict[str, Any]
    cells: dict[str, CellResult] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    regressions: list[str] = field(default_factory=list)
    written: dict[str, Path] = field(default_factory=dict)
    selected: int | None = None     # claim tests selected to run (None: not known)


SESSION_KEY = pytest.StashKey[ClaimSession]()
RECORD_KEY = pytest.StashKey["CellRecorder"]()


# ---------------------------------------------------------------- options

def _split(values: list[str] | None) -> tuple[str, ...]:
    return tuple(v.strip() for raw in values or [] for v in raw.split(",") if v.strip())


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("claims", "claim audit (rl-circuit-audit)")
    group.addoption("--pairs", action="append", help="model pairs to audit, comma separated (registry names)")
    group.addoption("--datasets", action="append", help="datasets, comma separated")
    group.addoption("--alphas", action="append", help="truncation fractions alpha in (0, 1], comma separated")
    group.addoption("--metrics", action="append", help="metrics, comma separated")
    group.addoption("--token-mode", action="append", dest="token_mode",
                    help=f"answer tokens the loss reads: {', '.join(TOKEN_MODES)} (comma separated)")
    group.addoption("--n", type=int, dest="claims_n", help="at most this many questions per cell")
    group.addoption("--device", help="cpu or cuda[:N]")
    group.addoption("--dtype", help="float32, bfloat16, float16 or float64")
    group.addoption("--run-id", help="report folder name (default: UTC time and process id, "
                                     "YYYYmmdd-HHMMSS-ffffff-pPID); an existing one is refused")
    group.addoption("--overwrite", action="store_true", dest="claims_overwrite",
                    help="replace the report of an existing --run-id (cleared when the run starts)")
    group.addoption("--reports-dir", default="reports", help="folder for run reports (default: reports)")
    group.addoption("--claims-baseline", help="claims.json of a stored run; a changed verdict fails the cell")
    group.addoption("--claims-compare-fail", action="append",
                    help="with --claims-baseline: fail on drift, e.g. effect:10% (repeatable)")
    group.addoption("--papers", action="append", metavar="PATH",
                    help="paper files (or folders of them) whose claims join the catalogue (repeatable)")
    group.addoption("--registry", default=None, help="pair registry TOML (default: fixtures/pairs.toml)")
    group.addoption("--questions", type=int, default=AuditConfig.questions,
                    help=f"problems answered per dataset (default {AuditConfig.questions})")
    group.addoption("--max-new-tokens", type=int, default=None, help="answer budget (default: the pair's)")
    group.addoption("--selection-variant", default=SelectionSettings.variant, help="paper or paper-code")
    group.addoption("--fidelity-threshold", type=float, default=AuditConfig.fidelity_threshold,
                    help="the Spearman a fidelity interval is judged against (FAITHFUL above, UNFAITHFUL "
                         "below, UNCERTAIN across); reported beside each verdict, it gates none")
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
    group.addoption("--short-answers", default=SelectionSettings.short_answers,
                    help="answers shorter than T_cut: slice (the paper's code), drop or error")


def parse_options(config: pytest.Config) -> ClaimOptions:
    """Validate the claim options; bad values raise UserError."""
    get = config.getoption
    alphas = parse_alphas(_split(get("alphas")))
    modes = parse_token_modes(_split(get("token_mode")))
    n = get("claims_n")
    if n is not None and n < 1:
        raise UserError(f"--n must be a positive number of questions, got {n}")
    device, dtype = get("device"), get("dtype")
    if device is not None or dtype is not None:
        from harness.models.loading import (  # imports torch: only when asked
            resolve_device,
            resolve_dtype,
        )
        if device is not None:
            resolve_device(device)
        if dtype is not None:
            resolve_dtype(dtype)
    run_id = get("run_id") or default_run_id()
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise UserError(f"--run-id {run_id!r}: use letters, digits, '.', '_' and '-' only")
    reports_dir = Path(get("reports_dir"))
    if not reports_dir.is_absolute():
        reports_dir = config.rootpath / reports_dir
    baseline = get("claims_baseline")
    limits = tuple(DriftLimit.parse(text) for text in get("claims_compare_fail") or [])
    if limits and baseline is None:
        raise UserError("--claims-compare-fail needs --claims-baseline FILE to compare against")
    add_papers(_split(get("papers")))
    return ClaimOptions(_split(get("pairs")), _split(get("datasets")), tuple(alphas), _split(get("metrics")),
                        modes, n, device, dtype, run_id, reports_dir,
                        Path(baseline) if baseline else None, limits, audit_config(config, n, device, dtype),
                        bool(get("claims_overwrite")))


def audit_config(config: pytest.Config, n: int | None, device: str | None, dtype: str | None) -> AuditConfig:
    """The run's one AuditConfig, from the audit options and every --set KEY=VALUE."""
    get = config.getoption
    device = device or "cpu"
    if dtype is None:
        from harness.models.loading import default_dtype  # imports torch: only when needed
        dtype = default_dtype(device)
    return AuditConfig(
        questions=get("questions"), device=device, dtype=dtype,
        selection=SelectionSettings(variant=get("selection_variant"), n=n or SelectionSettings.n,
                                    short_answers=get("short_answers")),
        decoding=DecodingSettings(max_new_tokens=get("max_new_tokens")),
        fidelity_threshold=get("fidelity_threshold"), fidelity_edges=get("fidelity_edges"),
        fidelity_samples=get("fidelity_samples"),
        grader=get("grader")).with_settings(parse_settings(get("settings")))


def claim_run_folder(options: ClaimOptions) -> None:
    """Refuse a run id whose report folder exists (its report would be shown as this run's), unless
    --overwrite: then clear that folder's report files so that whatever it holds after the run is
    this run's."""
    folder = options.run_dir
    if not folder.exists():
        return
    if not options.overwrite:
        raise UserError(f"--run-id {options.run_id}: {folder} already exists; choose another run id "
                        "or pass --overwrite to replace its report")
    if not folder.is_dir():
        raise UserError(f"--run-id {options.run_id}: {folder} is a file, not a report folder")
    for name in REPORT_FILES:
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / "figures", ignore_errors=True)


def worker_gpus(config: pytest.Config) -> list[str]:
    """The GPUs the xdist controller deals to its workers, one each: CUDA_VISIBLE_DEVICES's list, else
    (with --device cuda) every device torch sees; [] on the CPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip()]
    if not str(config.getoption("device") or "").startswith("cuda"):
        return []
    import torch  # the controller runs no test, so starting CUDA here does not bind a worker's device
    return [str(i) for i in range(torch.cuda.device_count())]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist controller: give worker gwK the K-th GPU (round-robin) before it starts CUDA, and the folder
    its stage lines are relayed through (`WorkerProgress`)."""
    config = node.config
    deal_gpu(node)
    if PROGRESS_KEY not in config.stash:
        write = terminal_line_writer(config)
        config.stash[PROGRESS_KEY] = WorkerProgress(write) if write is not None else None
    if config.stash[PROGRESS_KEY] is not None:
        node.workerinput["harness_progress"] = str(config.stash[PROGRESS_KEY].folder)


def deal_gpu(node) -> None:
    """Give xdist worker gwK the K-th of the controller's GPUs (`worker_gpus`), round-robin."""
    gpus = worker_gpus(node.config)
    if gpus:
        node.workerinput["harness_gpu"] = gpus[int(node.workerinput["workerid"].removeprefix("gw")) % len(gpus)]


def bind_worker_gpu(config: pytest.Config) -> str | None:
    """On an xdist worker given a GPU: make it the only one CUDA shows (so `cuda` means it); a
    `--device cuda:N` with N > 0 is refused there, since each worker sees one device."""
    gpu = getattr(config, "workerinput", {}).get("harness_gpu")
    if gpu is None:
        return None
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    device = str(config.getoption("device") or "")
    if device.startswith("cuda:") and device != "cuda:0":
        raise UserError(f"--device {device}: each xdist worker sees one GPU (its own, {gpu}); give --device cuda")
    return gpu


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "claim(id, section=None, statement=None): a claim of the audited paper")
    try:
        gpu = bind_worker_gpu(config)
        options = parse_options(config)
        if not hasattr(config, "workerinput"):
            claim_run_folder(options)
        baseline = {}
        if options.baseline_path is not None:
            baseline = {c.cell_id: c for c in load_claims(options.baseline_path).cells}
    except UserError as err:
        raise pytest.UsageError(str(err)) from None
    provenance = run_provenance(
        run_id=options.run_id, device=options.device, dtype=options.dtype, n=options.n,
        grid={"pairs": options.pairs, "datasets": options.datasets, "alphas": options.alphas,
              "metrics": options.metrics, "token_mode": options.token_mode},
        baseline=str(options.baseline_path) if options.baseline_path else None,
        **_process_provenance(config, gpu))
    state = ClaimSession(options, baseline, provenance)
    config.stash[SESSION_KEY] = state
    config.pluginmanager.register(ClaimCollector(state), "claim-collector")


def _process_provenance(config: pytest.Config, gpu: str | None) -> dict[str, Any]:
    """Where the run's work was split: --shard, the xdist worker count, and on a worker its id and GPU."""
    out: dict[str, Any] = {}
    if config.getoption("shard", None):
        out["shard"] = config.getoption("shard")
    workers = getattr(config.option, "numprocesses", None)
    if workers:
        out["xdist_workers"] = workers
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        out.update(worker=worker["workerid"], **({"worker_gpu": gpu} if gpu is not None else {}))
    return out


# ---------------------------------------------------------------- collection

class ClaimPoint(NamedTuple):
    """The value of a claim suite's `point` argument: one cell of one claim on the run's grid."""

    claim: str
    grid: GridCell


GRID_KEY = pytest.StashKey["RunGrid"]()
GRID_ERROR_KEY = pytest.StashKey[pytest.UsageError]()


def _usage(fn):
    try:
        return fn()
    except UserError as err:
        raise pytest.UsageError(str(err)) from None


def run_grid(config: pytest.Config) -> RunGrid:
    """The run's grid, built once per session from the options and the registry."""
    from harness.audit.grid import RunGrid  # the pipeline (torch): only for a run with claim suites
    from harness.models.registry import load_registry

    if GRID_KEY not in config.stash:
        options = config.stash[SESSION_KEY].options
        registry = _usage(lambda: load_registry(config.getoption("registry")))
        config.stash[GRID_KEY] = _usage(lambda: RunGrid.build(
            registry, pairs=options.pairs, datasets=options.datasets, alphas=options.alphas,
            metrics=options.metrics, token_modes=options.token_mode))
    return config.stash[GRID_KEY]


def _grid_id(name: str, value: Any) -> str:
    if name == "alpha":
        return alpha_tag(value)
    return re.sub(r"[^A-Za-z0-9]+", "_", str(value)).strip("_")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking `point` (the claim suites) runs once per cell of every catalogued claim with a
    rule, on the run's grid: its id is the cell id, its marks the claim and its xdist group (the pair).
    Other claim tests' pair/dataset/alpha/metric/token_mode arguments come from the options, else from
    the test module's `CLAIM_GRID` dict; ids read like `smollm2_grpo-gsm8k-a010`."""
    if "point" in metafunc.fixturenames:
        try:
            grid = run_grid(metafunc.config)
        except pytest.UsageError as err:   # raised once collection ends (pytest_collection_modifyitems):
            metafunc.config.stash[GRID_ERROR_KEY] = err   # a usage error there is one line on stderr
            metafunc.parametrize("point", [])
            return
        points = [pytest.param(ClaimPoint(claim.id, g), id=cell_id(claim, g),
                               marks=[pytest.mark.claim(claim.id), pytest.mark.xdist_group(grid.group(g))])
                  for claim in CLAIMS_BY_ID.values() if claim.rule is not None for g in grid.cells(claim.id)]
        metafunc.parametrize("point", points)
        return
    explicit = {name.strip() for mark in metafunc.definition.iter_markers("parametrize")
                for name in (mark.args[0].split(",") if isinstance(mark.args[0], str) else mark.args[0])}
    names = [n for n in GRID_ARGS if n in metafunc.fixturenames and n not in explicit]
    if not names:
        return
    options = metafunc.config.stash[SESSION_KEY].options
    defaults = getattr(metafunc.module, "CLAIM_GRID", {})
    axes = []
    for name in names:
        values = getattr(options, GRID_OPTIONS[name]) or tuple(defaults.get(name, ()))
        if not values:
            raise pytest.UsageError(f"{metafunc.definition.nodeid} needs --{GRID_OPTIONS[name].replace('_', '-')} "
                                    f"(or CLAIM_GRID[{name!r}] in its module)")
        axes.append(values)
    combos = list(itertools.product(*axes))
    ids = ["-".join(_grid_id(n, v) for n, v in zip(names, combo)) for combo in combos]
    metafunc.parametrize(names, combos, ids=ids)


def _claim_marker(item: pytest.Item) -> ClaimSpec | None:
    mark = item.get_closest_marker("claim")
    if mark is None:
        return None
    claim_id = mark.args[0] if mark.args else mark.kwargs.get("id")
    if not claim_id:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.claim needs a claim id, e.g. claim('C1')")
    known = CLAIMS_BY_ID.get(claim_id)
    section = mark.kwargs.get("section") or (mark.args[1] if len(mark.args) > 1 else None)
    statement = mark.kwargs.get("statement") or (mark.args[2] if len(mark.args) > 2 else None)
    if known is None and not statement:
        raise pytest.UsageError(f"{item.nodeid}: claim {claim_id!r} is not in the catalogue; give its statement")
    if known is not None and not (section or statement):
        return known
    return ClaimSpec(claim_id, known.name if known else claim_id, section or (known.section if known else ""),
                     statement or known.statement, known.direction if known else "increase",
                     paper=known.paper if known else mark.kwargs.get("paper", ""))


def point_of(item: pytest.Item) -> ClaimPoint | None:
    """The claim suite test's ClaimPoint, or None for another test."""
    params = getattr(item, "callspec", None)
    return params.params.get("point") if params else None


def grid_cell(item: pytest.Item) -> GridCell:
    """The grid cell a claim test stands for: its `point`, else its grid arguments."""
    point = point_of(item)
    if point is not None:
        return point.grid
    params = getattr(item, "callspec", None)
    params = params.params if params else {}
    return GridCell(**{k: params.get(k) for k in GRID_ARGS})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Let `-k C1` and `-k intensity` select a claim's tests; with --shard, deselect the claim suite
    tests of the other shards' groups (the grid's pairs dealt round-robin)."""
    if GRID_ERROR_KEY in config.stash:
        raise config.stash[GRID_ERROR_KEY]
    for item in items:
        spec = _claim_marker(item)
        if spec is not None:
            item.extra_keyword_matches.update({spec.id, spec.name})
    if not config.getoption("shard"):
        return
    grid = run_grid(config)
    index, shards = _usage(lambda: grid.check_shard(config.getoption("shard")))
    keep, drop = [], []
    for item in items:
        point = point_of(item)
        (drop if point and grid.shard_of(grid.group(point.grid), shards) != index else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# ---------------------------------------------------------------- recording a cell

class CellRecorder:
    """The `claim_cell` fixture: build cell ids, attach figures, record the test's cell."""

    def __init__(self, item: pytest.Item, session: ClaimSession) -> None:
        self._item = item
        self._session = session
        self.claim = _claim_marker(item)
        self.cell: CellResult | None = None
        self.problems: list[str] = []
        self.figures: list[Figure] = []

    def cell_id(self, *parts: Any, alpha: float | None = None) -> str:
        """Cell id for this test's claim, e.g. cell_id(pair, dataset, alpha=0.1)."""
        if self.claim is None:
            raise UserError(f"{self._item.nodeid} has no @pytest.mark.claim; cannot build a cell id")
        return make_cell_id(self.claim.id, self.claim.name, *parts, alpha=alpha)

    def add_figure(self, name: str, png: bytes, caption: str) -> None:
        """Attach a PNG to the report, under this test's claim."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise UserError(f"figure name {name!r}: use letters, digits, '.', '_' and '-' only")
        self.figures.append(Figure(name, png, caption, self.claim.id if self.claim else None))

    def add_edge_heatmap(self, pair: str, base_mean_abs: Any, post_mean_abs: Any,
                         src_names: list[str], dst_names: list[str]) -> None:
        """Fig. 2 analogue for one pair from mean |W| [n_src, n_dst] of base and post."""
        png = plots.edge_change_heatmap(base_mean_abs, post_mean_abs, src_names, dst_names,
                                        f"{pair}: relative change of mean |W| per edge")
        self.add_figure(f"heatmap-{_grid_id('pair', pair)}", png,
                        f"Fig. 2 analogue, {pair}: (post − base) / base of mean |W|, sources × destinations")

    def add_node_entropy(self, label: str, node_names: list[str], base: Any, post: Any) -> None:
        """Fig. 3b analogue: per-source-node output-edge entropy, base vs post."""
        png = plots.node_entropy_bars(node_names, base, post, f"{label}: per-node output-edge entropy change")
        self.add_figure(f"node-entropy-{_grid_id('pair', label)}", png,
                        f"Fig. 3b analogue, {label}: relative change of each source node's output-edge entropy")

    def record(self, cell: CellResult) -> CellResult:
        """Record this test's cell and turn its verdict into the test outcome (see module doc)."""
        if not isinstance(cell, CellResult):
            raise TypeError(f"claim_cell.record takes a CellResult, got {type(cell).__name__}")
        if self.cell is not None:
            raise UserError(f"{self._item.nodeid} recorded a second cell ({cell.cell_id}); one cell per test")
        if self.claim is not None and cell.claim_id != self.claim.id:
            raise UserError(f"{self._item.nodeid} is marked claim {self.claim.id} but recorded {cell.claim_id}")
        cell = with_run_provenance(cell, self._session)
        self.cell = cell
        options = self._session.options
        self.problems = baseline_problems(cell, self._session.baseline.get(cell.cell_id), list(options.drift_limits))
        for name, value in cell_properties(cell):
            self._item.user_properties.append((name, value))
        if self.problems:
            self._item.user_properties.append(("baseline_problems", "; ".join(self.problems)))
        message = self._message()
        if cell.verdict is Verdict.INVALID:
            raise InvalidCell(message)
        if cell.verdict is Verdict.INCONCLUSIVE and not self.problems:
            pytest.skip(message)   # the data decide nothing: not a failure (JUnit <skipped> with the reason)
        if cell.verdict is not Verdict.SUPPORTED or self.problems:
            pytest.fail(message, pytrace=False)
        return cell

    def _message(self) -> str:
        c = self.cell
        lines = [f"{c.verdict.value} {c.cell_id}" + (f": {c.reason}" if c.reason else ""),
                 f"  rule: {c.rule}",
                 f"  n={_n(c.n)} effect={_n(c.effect)} CI=[{_n(c.ci_low)}, {_n(c.ci_high)}] d_z={_n(c.effect_size)} "
                 f"p={_n(c.p_value)} p_holm={_n(c.p_holm)} p_bh={_n(c.p_bh)} "
                 f"fidelity={_n((c.fidelity or {}).get('spearman'))} {(c.fidelity or {}).get('status', '')} "
                 f"exact={(c.robustness or {}).get('verdict') or '–'}"]
        lines += [f"  BASELINE: {problem} ({self._session.options.baseline_path})" for problem in self.problems]
        return "\n".join(lines)


def _n(value: Any) -> str:
    return "–" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def with_run_provenance(cell: CellResult, session: ClaimSession) -> CellResult:
    run = session.provenance
    defaults = {"run_id": run["run_id"], "code_version": run["code_version"], "device": run["device"],
                "dtype": run["dtype"], "libraries": run["libraries"], "shard": run.get("shard"),
                "worker": run.get("worker"), "worker_gpu": run.get("worker_gpu")}
    return cell.replace(provenance={**{k: v for k, v in defaults.items() if v is not None}, **cell.provenance})


def error_record(phase: str, excinfo: pytest.ExceptionInfo | None, item: pytest.Item) -> dict[str, Any]:
    """Where a claim test failed: {stage, type, message, location}; the stage is the pytest phase
    (setup: a fixture such as `judged`; call: the test body) and the innermost frame in this checkout."""
    if excinfo is None:
        return {"stage": f"{phase} of {item.name}", "type": "NoCell", "location": item.nodeid,
                "message": "the test finished without calling claim_cell.record"}
    location = item.nodeid
    for entry in reversed(excinfo.traceback):   # innermost frame of this checkout or of the test's own file
        path = Path(str(entry.path))
        ours = path.is_relative_to(HARNESS_ROOT) and not {".venv", "site-packages"} & set(path.parts)
        if ours or path == Path(str(item.path)):
            root = HARNESS_ROOT if ours else item.config.rootpath
            location = f"{path.relative_to(root) if path.is_relative_to(root) else path.name}:{entry.lineno + 1} in {entry.name}"
            break
    lines = str(excinfo.value).strip().splitlines()
    message = (lines[0] if lines else "") or excinfo.typename
    return {"stage": f"{phase} ({location})", "type": excinfo.typename, "location": location,
            "message": message[:300]}


def error_cell(item: pytest.Item, claim: ClaimSpec, error: dict[str, Any], session: ClaimSession) -> CellResult:
    """The INVALID cell of a claim test that raised or recorded nothing, with the id it would have had."""
    g = grid_cell(item)
    reason = f"error in {error['stage']}: {error['type']}: {error['message']}"
    cell = CellResult(claim.id, claim.name, cell_id(claim, g), Verdict.INVALID, ERROR_RULE, reason, g.pair,
                      g.dataset, g.alpha, g.metric, g.token_mode, extra={"error": error},
                      provenance={"test": item.nodeid}, paper=claim.paper)
    return with_run_provenance(cell, session)


@pytest.fixture
def claim_cell(request: pytest.FixtureRequest) -> CellRecorder:
    """Records the test's CellResult; the verdict becomes the outcome."""
    recorder = CellRecorder(request.node, request.config.stash[SESSION_KEY])
    request.node.stash[RECORD_KEY] = recorder
    return recorder


# ---------------------------------------------------------------- the audit's pipeline and families

PIPELINE_KEY = pytest.StashKey["AuditPipeline"]()
PROGRESS_KEY = pytest.StashKey["WorkerProgress | None"]()


@pytest.fixture(scope="session")
def audit(pytestconfig: pytest.Config) -> AuditPipeline:
    """The session's pipeline: the run's one config, stages cached on disk and in memory."""
    from harness.audit.stages import AuditPipeline
    from harness.plan.estimate import fidelity_planner, segment_planner

    config = pytestconfig.stash[SESSION_KEY].options.config
    pipeline = AuditPipeline(config, pytestconfig.getoption("registry"),
                             progress=pytestconfig.getoption("capture") == "no",
                             log=terminal_line_writer(pytestconfig),
                             plan_segments=segment_planner(config.dtype, config.eap_batch_size, config.device),
                             plan_fidelity=fidelity_planner(config.dtype, config.device))
    pytestconfig.stash[PIPELINE_KEY] = pipeline
    return pipeline


@pytest.fixture(scope="session")
def families(audit: AuditPipeline, request: pytest.FixtureRequest) -> Families:
    """Each claim's family, judged once on the run's grid (the claims the session runs)."""
    from harness.audit.grid import Families

    claims = tuple(dict.fromkeys(p.claim for p in map(point_of, request.session.items) if p is not None))
    return Families(audit, run_grid(request.config), claims)


@pytest.fixture
def judged(families: Families, point: ClaimPoint) -> CellResult:
    """This test's CellResult, judged with the rest of its claim's family on the run's grid."""
    return families.result(point.claim, point.grid)


@pytest.fixture
def figure_cell(families: Families, point: ClaimPoint) -> CellData | None:
    """The pipeline cell to draw a pair's figure from, or None: once per pair, at its first dataset,
    the largest alpha and the first token mode of the run."""
    g, grid = point.grid, families.grid
    if g.pair is None or g.alpha is None:
        return None
    datasets = grid.figure_datasets(point.claim, g.pair)
    if not datasets or (g.dataset, g.alpha, g.token_mode) != (datasets[0], max(grid.alphas), grid.token_modes[0]):
        return None
    try:
        return families.audit.cell(g.pair, g.dataset, g.alpha, g.token_mode)
    except UserError:
        return None


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


# ---------------------------------------------------------------- stage progress

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


# ---------------------------------------------------------------- outcomes

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    recorder = item.stash.get(RECORD_KEY, None)
    if report.failed and call.excinfo is not None and call.excinfo.errisinstance(UserError):
        report.longrepr = f"error: {call.excinfo.value}"   # a user error is its message, not a traceback
    if call.when == "setup" and report.failed and (recorder is None or recorder.cell is None):
        _record_error(item, report, call)
    if call.when != "call" or recorder is None:
        return report
    if recorder.cell is not None:
        report.claim_cell = recorder.cell.to_dict()
        report.claim_problems = recorder.problems
        if call.excinfo is not None and call.excinfo.errisinstance(InvalidCell):
            report.longrepr = str(call.excinfo.value)
    elif report.passed:
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} uses claim_cell but recorded no cell (call claim_cell.record)"
        _record_error(item, report, None)
    elif report.failed:
        _record_error(item, report, call)
    report.claim_figures = [{"name": f.name, "png": base64.b64encode(f.png).decode("ascii"),
                             "caption": f.caption, "claim_id": f.claim_id} for f in recorder.figures]
    return report


def _record_error(item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo | None) -> None:
    """Give a failed claim test's report the INVALID cell of its error (nothing for a non-claim test)."""
    claim = _claim_marker(item)
    if claim is None:
        return
    session = item.config.stash[SESSION_KEY]
    error = error_record(report.when, call.excinfo if call is not None else None, item)
    report.claim_cell = error_cell(item, claim, error, session).to_dict()
    report.claim_problems = []


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    data = getattr(report, "claim_cell", None)
    if report.when != "call" or data is None:
        return None
    verdict = Verdict.parse(data["verdict"])
    if report.passed:
        return "passed", ".", ("SUPPORTED", {"green": True})
    if report.claim_problems:
        return "failed", "F", (f"{verdict.value} (BASELINE)", {"red": True})
    if verdict is Verdict.INVALID:
        return "error", "E", ("INVALID", {"purple": True})
    if verdict is Verdict.INCONCLUSIVE:
        return "inconclusive", "I", ("INCONCLUSIVE", {"yellow": True})
    return "failed", "F", (verdict.value, {"red": True})


class ClaimCollector:
    """Per-session hooks that need the session state: collect cells, write reports, summarise."""

    def __init__(self, state: ClaimSession) -> None:
        self.state = state

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Count the claim tests selected; every xdist worker collects them all, and sends its count to
        the controller (`pytest_testnodedown`), which collects none."""
        if session.items:
            self.state.selected = sum(_claim_marker(item) is not None for item in session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        selected = getattr(node, "workeroutput", {}).get("harness_selected")
        if selected is not None:
            self.state.selected = max(self.state.selected or 0, selected)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect cells and figures (also from xdist workers' reports, on the controller)."""
        if report.when not in ("setup", "call"):
            return
        data = getattr(report, "claim_cell", None)
        if data is not None:
            cell = CellResult.from_dict(data)
            self.state.cells[cell.cell_id] = cell
            self.state.regressions += [f"{cell.cell_id}: {p}" for p in getattr(report, "claim_problems", [])]
        for fig in getattr(report, "claim_figures", []):
            self.state.figures[fig["name"]] = Figure(fig["name"], base64.b64decode(fig["png"]), fig["caption"],
                                                     fig["claim_id"])

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Write the run's reports (controller only; nothing when no cell or figure was recorded)."""
        state = self.state
        if hasattr(session.config, "workerinput"):
            session.config.workeroutput["harness_selected"] = state.selected
            return
        if not (state.cells or state.figures):
            return
        provenance = {**state.provenance, "selected_cells": state.selected}
        off_grid = run_grid(session.config).off_grid() if state.cells else {}
        if off_grid:
            provenance["off_grid"] = off_grid
        run = ClaimsRun(state.options.run_id, list(state.cells.values()), provenance,
                        list(state.figures.values()))
        state.written = write_reports(run, state.options.run_dir)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.state.cells:
            write_terminal_matrix(terminalreporter, self.state)


# ---------------------------------------------------------------- terminal summary

def write_terminal_matrix(tr, state: ClaimSession) -> None:
    """Experiments x claims with coloured verdict words, then the non-supported cells and baseline."""
    cells = list(state.cells.values())
    matrix = build_matrix(cells)
    tr.section("claim matrix", sep="=", bold=True)
    from harness.audit.algorithm import population, scope_text

    tr.write_line(f"population: {scope_text(population(cells))}")
    headers = [claim_label(c) for c in matrix.claims]
    exp_width = max(len("experiment"), *(len(e) for e in matrix.experiments))
    widths = [max(len(h), *(len(matrix.entry_text(e, c)) for e in matrix.experiments))
              for h, c in zip(headers, matrix.claims)]
    tr.write_line("experiment".ljust(exp_width) + "  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for exp in matrix.experiments:
        tr.write(exp.ljust(exp_width))
        for claim_id, width in zip(matrix.claims, widths):
            verdict = matrix.entry_verdict(exp, claim_id)
            text = (matrix.entry_text(exp, claim_id) or "·").ljust(width)
            tr.write("  ")
            tr.write(text, **({TERMINAL_COLOURS[verdict]: True} if verdict else {}))
        tr.write_line("")
    counts = {v: sum(c.verdict is v for c in cells) for v in Verdict}
    errored = sum(bool(c.extra.get("error")) for c in cells)
    of = f" of {state.selected} selected" if state.selected is not None else ""
    tr.write_line(", ".join(f"{n} {v.value}" for v, n in counts.items() if n) + f" ({len(cells)} cells{of}"
                  + (f"; {errored} errored: a test raised, see the INVALID rows" if errored else "") + ")",
                  **({"red": True} if errored else {}))
    for claim_id in matrix.claims:
        tr.write_line(f"{claim_label(claim_id)}: " + claim_answer([c for c in cells if c.claim_id == claim_id]))
    if control_summary(cells):
        tr.write_line(control_summary(cells), bold=True)
    for verdict in SEVERITY[:-1]:
        for cell in sorted((c for c in cells if c.verdict is verdict), key=lambda c: c.cell_id):
            tr.write(f"{verdict.value:<12} ", **{TERMINAL_COLOURS[verdict]: True})
            tr.write_line(f"{cell.cell_id}: {cell.reason}")
    if state.options.baseline_path is not None:
        missing = sorted(set(state.baseline) - set(state.cells))
        tr.write_line(f"baseline {state.options.baseline_path}: {len(state.regressions)} regression(s), "
                      f"{len(missing)} baseline cell(s) not run")
        for line in state.regressions:
            tr.write_line(f"REGRESSION   {line}", red=True)
    if state.written:
        tr.write_line(f"claim reports: {state.written['html'].parent}/ "
                      f"(claims.json, claims.md, claims.html, claims-junit.xml)")


def run_suites(argv: list[str]) -> int:
    """Run pytest in this process with the claim plugin (what `python -m harness audit` calls)."""
    return int(pytest.main(argv))
