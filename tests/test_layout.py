"""The package's layout is its pipeline: imports run one way between stages, no module cycle,
pytest only in the plugin, and the report commands run without torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "harness"
# Stages in import order: a module may import its own stage, the shared leaves, and any stage to
# its left, never one to its right.
LEAVES = {"harness.errors", "harness.files", "harness.versions"}
STAGES = ("circuit", "models", "data", "analysis", "audit", "report", "training", "plan", "pytest_plugin", "cli", "__main__")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str | None = None) -> set[str]:
    """Modules of `harness` that `path` imports, at any depth (lazy imports included); `name` is the
    module's own name (default: from its place in the package)."""
    name = name or module_name(path)
    is_package = path.name == "__init__.py"
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from package import submodule` depends on the submodule; any other name, on the module.
            found |= {f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names}
    return {m for m in found if m in modules and m != name}


def all_imports() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def stage_rank(module: str) -> int:
    """0 for the shared leaves and the package root, 1.. for the stages in order."""
    if module in LEAVES or module == "harness":
        return 0
    part = module.split(".")[1]
    if part in STAGES:
        return STAGES.index(part) + 1
    raise AssertionError(f"{module} belongs to no stage; add it to tests/test_layout.py")


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_between_modules() -> None:
    graph = {m: {i for i in deps if i != "harness"} for m, deps in all_imports().items()}
    # A package's __init__ importing its own modules is not a cycle with them importing a sibling.
    assert cycle(graph) is None, " -> ".join(cycle(graph) or [])


def test_imports_run_one_way_between_stages() -> None:
    wrong = [f"{m} imports {i}" for m, deps in all_imports().items() for i in deps if stage_rank(i) > stage_rank(m)]
    assert not wrong, "\n".join(wrong)


# The pipeline that fetches records: a claim's rule reads records (harness.audit.records), never these.
PIPELINE = {"harness.audit.stages", "harness.audit.grid", "harness.audit.collect", "harness.audit.session",
            "harness.audit.store"}
SUITES = PACKAGE.parent / "suites"


def pipeline_imports(paths: list[Path], package: str) -> dict[str, set[str]]:
    """{module: the pipeline modules it imports} for each of `paths` that imports any."""
    found = {f"{package}.{p.stem}": imports_of(p, f"{package}.{p.stem}") & PIPELINE for p in paths}
    return {m: deps for m, deps in found.items() if deps}


def test_claim_rules_read_records_not_the_pipeline() -> None:
    rules = sorted((PACKAGE / "audit" / "claims").glob("*.py"))
    assert len(rules) >= 8 and pipeline_imports(rules, "harness.audit.claims") == {}


def test_the_rule_check_refuses_a_rule_that_imports_the_pipeline(tmp_path: Path) -> None:
    planted = tmp_path / "greedy_rule.py"
    planted.write_text("from harness.audit.stages import AuditPipeline\n\n"
                       "def rule(claim, records, grid, context):\n"
                       "    from harness.audit.collect import PipelineRecords\n")
    assert pipeline_imports([planted], "harness.audit.claims") == {
        "harness.audit.claims.greedy_rule": {"harness.audit.stages", "harness.audit.collect"}}


def test_suites_hold_only_the_claims_test_and_its_figures() -> None:
    """suites/ imports the catalogue, metrics and plots; its options, grid and fixtures are the
    plugin's, and its conftest.py declares nothing."""
    allowed = {"harness.audit.claims", "harness.analysis.metrics", "harness.report.plots"}
    found = {p.name: imports_of(p, f"suites.{p.stem}") for p in sorted(SUITES.glob("*.py"))}
    assert set(found) == {"conftest.py", "test_claims.py"}
    assert found["conftest.py"] == set() and found["test_claims.py"] <= allowed, found
    conftest = ast.parse((SUITES / "conftest.py").read_text())
    assert [type(node).__name__ for node in conftest.body] == ["Expr"]   # its docstring alone


def test_only_the_plugin_imports_pytest() -> None:
    users = [module_name(p) for p in PACKAGE.rglob("*.py")
             if any(m == "pytest" or m.startswith("pytest.") or m == "_pytest"
                    for node in ast.walk(ast.parse(p.read_text()))
                    for m in ([a.name for a in node.names] if isinstance(node, ast.Import)
                              else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []))]
    assert users == ["harness.pytest_plugin"], users


def test_no_sys_path_manipulation_in_package_or_suites() -> None:
    roots = [PACKAGE, PACKAGE.parent / "suites"]
    offenders = [str(p) for root in roots for p in root.rglob("*.py") if "sys.path" in p.read_text()]
    assert not offenders, offenders


def _run_without_torch(argv: list[str]) -> subprocess.CompletedProcess:
    """`python -m harness ARGV` in a fresh interpreter that prints which heavy modules it imported."""
    probe = ("import sys\nfrom harness.cli import main\n"
             "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as exit_:\n    code = exit_.code\n"
             "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
             "print(f'EXIT={code} HEAVY=' + ','.join(heavy))\n")
    return subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, cwd=PACKAGE.parent)


def test_report_diff_runs_without_importing_torch(tmp_path: Path) -> None:
    golden = json.loads((PACKAGE.parent / "tests" / "golden" / "claims.json").read_text())
    old = dict(golden, run_id="old", created="2026-01-01T00:00:00+00:00", figures=[])
    new = json.loads(json.dumps(old))
    new["run_id"] = "new"
    new["cells"][0]["verdict"] = "REFUTED" if old["cells"][0]["verdict"] != "REFUTED" else "SUPPORTED"
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    done = _run_without_torch(["report", "diff", str(tmp_path / "old.json"), str(tmp_path / "new.json")])
    assert f"{old['cells'][0]['cell_id']}: {old['cells'][0]['verdict']} -> {new['cells'][0]['verdict']}" in done.stdout
    assert "EXIT=1 HEAVY=\n" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("argv", [["--help"], ["report", "merge", "--help"]])
def test_help_does_not_import_torch(argv: list[str]) -> None:
    done = _run_without_torch(argv)
    assert "EXIT=0 HEAVY=\n" in done.stdout, done.stdout + done.stderr
