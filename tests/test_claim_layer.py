"""The claim layer: a paper is a data file, a claim is a catalogue entry plus a rule function, a rule
is decided from plain records with no pipeline, model or cache, and one family judge decides.

The second paper (tests/papers/attention-example.toml) has one claim, X1, "online RL raises the mean
|W| of attention-input edges", decided by the rule function beside it (tests/papers/attention_rules.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness.audit.claims import CLAIMS_BY_ID, ClaimSpec, add_papers, get_claim, load_paper
from harness.audit.claims.common import FamilyContext, GridCell
from harness.audit.claims.family import judge_claim
from harness.audit.records import PlainRecords
from harness.audit.verdicts import Verdict
from harness.circuit.graph import build_graph
from harness.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ROOT / "tests" / "papers"
N = 12


def planted(gain: float, attention_only: bool = False, seed: int = 0) -> PlainRecords:
    """Plain records of one online-RL cell: base scores drawn at random over a 2-layer paper-layout
    graph, post = base x (1 + gain) on every edge (or on the attention-input edges only), 1 % noise."""
    graph = build_graph(2, "paper")
    mask = graph.mask()
    rng = np.random.default_rng(seed)
    base = rng.lognormal(0.0, 0.5, (N, graph.n_src, graph.n_dst)) * rng.choice([-1, 1], (N, graph.n_src, graph.n_dst))
    scale = np.ones(graph.n_dst)
    scale[[d.kind == "attn" for d in graph.destinations] if attention_only else slice(None)] += gain
    post = base * scale * (1 + 0.01 * rng.normal(size=base.shape))

    def scores(w: np.ndarray) -> SimpleNamespace:
        return SimpleNamespace(scores=torch.from_numpy(w.astype(np.float32)), mask=mask, graph=graph)

    ids = tuple(f"q{i}" for i in range(N))
    cell = SimpleNamespace(pair=SimpleNamespace(name="rl"), dataset="d", alpha=0.5, token_mode="own",
                           base=scores(base), post=scores(post), n=N, funnel=[], measured_at=0.5,
                           selection=SimpleNamespace(
                               ids=ids, t_cut=4, t_bar=10.0, params=SimpleNamespace(span_start="after_template"),
                               span_profile=lambda mode: {side: {"template_or_copy_share": 0.0, "computational_mean": 4.0}
                                                          for side in ("base", "post")}),
                           fidelity={s: {"spearman": 0.9, "ci": [0.8, 0.95], "status": "FAITHFUL"}
                                     for s in ("base", "post")},
                           provenance={"cache_keys": {}})
    return PlainRecords(kinds={"rl": "online-rl"}, cells={("rl", "d", 0.5, "own"): cell})


G = GridCell("rl", "d", 0.5, None, "own")


@pytest.mark.parametrize("gain, expected", [(0.3, Verdict.SUPPORTED), (-0.3, Verdict.REFUTED),
                                            (0.0, Verdict.INCONCLUSIVE)])
def test_a_claim_is_decided_from_plain_records(gain: float, expected: Verdict) -> None:
    cell = judge_claim(get_claim("C1"), planted(gain), [G], _context())[G]
    assert cell.verdict is expected, cell.reason
    assert cell.paper == "2509.21044" and cell.extra["family"] == ["C1-intensity-rl-d-a050"]


def _context() -> FamilyContext:
    return FamilyContext(rl_pairs=("rl",), alphas=(0.5,))


def test_deciding_from_plain_records_loads_no_pipeline() -> None:
    """In a fresh interpreter: the rule and the family judge decide C1 without importing the stages,
    the grid, the collector, the cache store or the model session."""
    probe = f"""
import sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from test_claim_layer import G, planted, _context
from harness.audit.claims import get_claim
from harness.audit.claims.family import judge_claim
cell = judge_claim(get_claim("C1"), planted(0.3), [G], _context())[G]
loaded = sorted(m for m in ("harness.audit.stages", "harness.audit.grid", "harness.audit.collect",
                            "harness.audit.store", "harness.audit.session") if m in sys.modules)
print(cell.verdict.value, loaded)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "SUPPORTED []", done.stdout + done.stderr


@pytest.fixture
def catalogue():
    """The catalogue as it was before the test, restored after it (a paper added in one test must not
    give later suite runs in this process its claims)."""
    from harness.audit.claims import PAPERS as LOADED
    claims, papers = dict(CLAIMS_BY_ID), dict(LOADED)
    yield
    CLAIMS_BY_ID.clear()
    CLAIMS_BY_ID.update(claims)
    LOADED.clear()
    LOADED.update(papers)


def test_the_new_claims_rule_function_decides_from_plain_records(catalogue) -> None:
    """X1's rule (a function outside the package) reads the attention-input edges only: a gain planted
    there alone is SUPPORTED for X1, and C1 (every edge) sees a smaller effect."""
    sys.path.insert(0, str(PAPERS))
    try:
        claims = add_papers([PAPERS])
        x1 = get_claim("X1")
        records = planted(0.3, attention_only=True)
        cell = judge_claim(x1, records, [G], _context())[G]
    finally:
        sys.path.remove(str(PAPERS))
    assert [c.id for c in claims] == ["X1"]
    assert x1.paper == "attention-example" and x1.rule == "attention_rules:rule"
    assert cell.verdict is Verdict.SUPPORTED and cell.paper == "attention-example", cell.reason
    c1 = judge_claim(get_claim("C1"), records, [G], _context())[G]
    assert abs(c1.extra["relative_change"]) < cell.effect / cell.base_value


def test_a_paper_file_is_checked(tmp_path: Path, catalogue) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[paper]\nid = "p"\n[[claims]]\nid = "Z1"\nname = "z"\nstatement = "s"\ndirection = "up"\n'
                   'rule = "metric_change"\n')
    with pytest.raises(UserError, match="direction 'up' not in"):
        load_paper(bad)
    bad.write_text('[paper]\nid = "p"\n[[claims]]\nid = "Z1"\nname = "z"\n')
    with pytest.raises(UserError, match=r"claim #1: missing field\(s\) statement, direction, rule"):
        load_paper(bad)
    bad.write_text('[paper]\nid = "p"\n[[claims]]\nid = "Z1"\nname = "z"\nstatement = "s"\n'
                   'direction = "increase"\nrule = "metric_change"\nneeds = ["weights"]\n')
    with pytest.raises(UserError, match="needs 'weights' not in answers, cells, causal, estimates"):
        load_paper(bad)
    taken = tmp_path / "taken.toml"
    taken.write_text('[paper]\nid = "other"\n[[claims]]\nid = "C1"\nname = "z"\nstatement = "s"\n'
                     'direction = "increase"\nrule = "metric_change"\n')
    with pytest.raises(UserError, match="claim id\\(s\\) C1 already taken by paper 2509.21044"):
        add_papers([taken])
    with pytest.raises(UserError, match="no such file or folder"):
        add_papers([tmp_path / "missing"])


def test_a_rule_that_cannot_be_imported_says_so() -> None:
    from harness.audit.claims import rule_function
    claim = ClaimSpec("Z9", "z", "", "s", "increase", rule="no_such_module:rule")
    with pytest.raises(UserError, match="claim Z9: rule 'no_such_module:rule' cannot be imported"):
        rule_function(claim)


def test_stages_follow_what_a_claim_declares_it_needs() -> None:
    """The grid computes the stages the session's claims declare (ClaimSpec.needs), never by rule name:
    answers alone for C9; cells at every alpha for C1; the causal check only with C8; the interventions
    only with CB1-CB3, on the pairs they read (offline preference)."""
    from harness.audit.grid import Families, RunGrid
    registry = {"p": SimpleNamespace(name="p", algorithm_kind="online-rl", datasets=("d",), bundled=False,
                                     base="x")}
    grid = RunGrid(("p",), ("d",), (0.1, 0.5), ("intensity",), ("own",), registry, False)
    audit = SimpleNamespace(config=SimpleNamespace(robustness_estimator="exact"))

    def stages(*claims):
        return Families.stages_of(SimpleNamespace(grid=grid, claims=claims, audit=audit), "p")

    assert stages("C9") == (["d"], [], False, (), False)
    assert stages("C1") == (["d"], [("d", 0.1, "own"), ("d", 0.5, "own")], False, (), False)
    assert stages("C8")[2] is True and stages("C1", "C9")[2] is False
    assert stages("CB1") == ([], [], False, (), False)          # CB1 reads offline-preference pairs, p is online RL
    registry["p"].algorithm_kind = "offline-preference"
    assert stages("CB1")[4] is True and stages("CB1")[1] == [("d", 0.1, "own"), ("d", 0.5, "own")]
    assert stages("C1", "C8")[4] is False
    registry["p"].algorithm_kind = "online-rl"
    CLAIMS_BY_ID["Z8"] = ClaimSpec("Z8", "z", "", "s", "increase", rule="accuracy", needs=("answers",))
    try:
        assert stages("Z8") == (["d"], [], False, (), False)   # a new rule other than "accuracy" need not sweep EAP
    finally:
        del CLAIMS_BY_ID["Z8"]



def test_a_claim_across_alphas_is_off_a_one_alpha_grid_and_says_why() -> None:
    """C5 reads how a change moves across alpha: a grid of one alpha gives it no cells (not 18 INVALID
    ones) and names it, with the reason, in off_grid; two alphas give it its cells back."""
    from harness.audit.grid import RunGrid
    registry = {"p": SimpleNamespace(name="p", algorithm_kind="online-rl", datasets=("d",), bundled=False,
                                     base="x")}
    one = RunGrid(("p",), ("d",), (0.3,), ("intensity",), ("own",), registry, False)
    assert one.cells("C5") == [] and one.cells("C1") != []
    assert set(one.off_grid()) == {"C5"} and "needs at least 2 alphas" in one.off_grid()["C5"]
    assert "0.3" in one.off_grid()["C5"]
    two = RunGrid(("p",), ("d",), (0.3, 0.5), ("intensity",), ("own",), registry, False)
    assert two.off_grid() == {} and len(two.cells("C5")) == 1

@pytest.mark.slow
def test_a_second_paper_runs_through_the_suites_under_its_own_id(tmp_path: Path) -> None:
    """The suites on the tiny pairs with `--papers tests/papers`: X1's cells are in the report beside
    C1's, under the paper id attention-example; the package is not edited."""
    script = f"""
import sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from pathlib import Path
import tiny_pairs
tiny_pairs.write_registry(Path('pairs.toml'))
tiny_pairs.write_dataset(Path('sums.jsonl'))
"""
    env = dict(os.environ, HARNESS_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(PAPERS), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "suites"), "-p", "no:cacheprovider", "-q", "--rootdir", str(ROOT),
         "--registry", "pairs.toml", "--pairs", "tiny-rl", "--datasets", "sums.jsonl", "--alphas", "0.6,1.0",
         "--questions", "120", "--grader", "lenient", "--fidelity-edges", "8", "--fidelity-samples", "10",
         "--papers", str(PAPERS), "-k", "X1 or C1", "--run-id", "two-papers", "--reports-dir", str(tmp_path / "r")],
        cwd=tmp_path, env=env, capture_output=True, text=True)
    document = json.loads((tmp_path / "r" / "two-papers" / "claims.json").read_text())
    papers = {c["cell_id"]: c["paper"] for c in document["cells"]}
    assert papers == {"C1-intensity-tiny_rl-sums_jsonl-a060": "2509.21044",
                      "C1-intensity-tiny_rl-sums_jsonl-a100": "2509.21044",
                      "X1-attention_intensity-tiny_rl-sums_jsonl-a060": "attention-example",
                      "X1-attention_intensity-tiny_rl-sums_jsonl-a100": "attention-example"}, done.stdout[-3000:]
    x1 = [c for c in document["cells"] if c["claim_id"] == "X1"]
    assert all(c["n"] > 0 and c["p_holm"] is not None and c["extra"]["family_size"] == 2 for c in x1)
    assert {"id": "X1", "paper": "attention-example", "name": "attention_intensity", "section": "§1",
            "statement": get_claim_text(), "direction": "increase"} in document["claims"]
    assert "paper attention-example" in (tmp_path / "r" / "two-papers" / "claims.md").read_text()


def get_claim_text() -> str:
    return load_paper(PAPERS / "attention-example.toml")[1][0].statement


def test_a_family_that_loses_a_cell_says_so() -> None:
    """A cell that cannot be tested (its selection kept nothing) leaves Holm's family: the others'
    m shrinks, and each of them names the lost member (finding F5's side effect, made visible)."""
    from harness.data.selection import FunnelStep, SelectionError

    records = planted(0.3)
    records.cells[("rl", "d", 0.1, "own")] = SelectionError("no question kept", [FunnelStep("answered", 0, "r")])
    lost, kept = GridCell("rl", "d", 0.1, None, "own"), G
    cells = judge_claim(get_claim("C1"), records, [lost, kept], _context())
    assert cells[lost].verdict is Verdict.INVALID and cells[lost].reason.startswith("selection left no sample")
    assert cells[kept].extra["holm_m"] == 2 and cells[kept].extra["family_size"] == 2
    assert cells[kept].extra["family_unusable"] == ["C1-intensity-rl-d-a010"]
    assert cells[kept].verdict is Verdict.SUPPORTED


def test_a_cell_whose_test_fails_is_invalid_alone() -> None:
    """A cell whose scores hold a NaN (its test raises) is INVALID with the error; the family's other cell
    is still decided, and names the lost member (it once turned the whole family INVALID)."""
    records = planted(0.3)
    broken = planted(0.3, seed=1).cells[("rl", "d", 0.5, "own")]
    broken.base.scores[0, 0, 0] = float("nan")
    records.cells[("rl", "d", 0.1, "own")] = broken
    lost = GridCell("rl", "d", 0.1, None, "own")
    cells = judge_claim(get_claim("C1"), records, [lost, G], _context())
    assert cells[lost].verdict is Verdict.INVALID and cells[lost].reason.startswith("its test failed (UserError: ")
    assert cells[G].verdict is Verdict.SUPPORTED and cells[G].extra["family_unusable"] == ["C1-intensity-rl-d-a010"]
