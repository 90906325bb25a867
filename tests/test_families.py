"""A claim's family is fixed by the grid: the same cell gets the same corrected p whatever `-k`
selects; and the two-direction Holm correction keeps the chance of any directional verdict under
the global null at or below alpha (Monte Carlo, with its error)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tiny_pairs
import torch
from scipy.stats import ttest_1samp

from harness.analysis.stats.multiplicity import holm
from harness.audit.claims.common import FamilyTest
from harness.audit.verdicts import Verdict, family_verdicts

pytest_plugins = ["pytester"]

SUITES = Path(__file__).resolve().parent.parent / "suites"
ALPHA = 0.05


def _null_families(reps: int, m: int, n: int, seed: int) -> list[list[FamilyTest]]:
    """`reps` families of m cells whose per-question differences are N(0, 1): the global null."""
    rng = np.random.default_rng(seed)
    diffs = rng.normal(size=(reps, m, n))
    up = ttest_1samp(diffs, 0, axis=2, alternative="greater").pvalue
    down = ttest_1samp(diffs, 0, axis=2, alternative="less").pvalue
    return [[FamilyTest(n, float(u), float(d)) for u, d in zip(up[r], down[r])] for r in range(reps)]


def test_directional_error_rate_under_the_global_null_is_at_most_alpha(monkeypatch) -> None:
    # statsmodels' Holm runs a full gc.collect() per call (about 0.15 s in a process holding torch);
    # it changes no number, so the 8000 calls here skip it.
    monkeypatch.setattr("gc.collect", lambda *args: 0)
    reps, m = 4000, 6
    families = _null_families(reps, m, n=20, seed=5)
    directional = [any(d.label in (Verdict.SUPPORTED, Verdict.REFUTED) for d in family_verdicts(f, significance=ALPHA))
                   for f in families]
    rate = float(np.mean(directional))
    mc_error = math.sqrt(ALPHA * (1 - ALPHA) / reps)
    assert rate <= ALPHA + 3 * mc_error, f"rate {rate:.4f} > alpha {ALPHA} + 3 x MC error {mc_error:.4f}"
    # The rule it replaced (Holm within each direction at alpha) lets about 2 alpha through.
    separate = [bool((holm([t.p_claimed for t in f]) < ALPHA).any() or (holm([t.p_opposite for t in f]) < ALPHA).any())
                for f in families]
    assert float(np.mean(separate)) > ALPHA + 3 * mc_error


def _audit(pytester: pytest.Pytester, run_id: str, *extra: str) -> dict:
    pytester.runpytest_subprocess(  # fresh interpreter: torch modules cannot be registered twice
        str(SUITES), "-p", "no:cacheprovider", "--registry", "pairs.toml", "--datasets", "sums.jsonl",
        "--grader", "lenient",  # the tiny models print a bare sum, no \boxed{} or ####
        "--pairs", "tiny-rl,tiny-pref", "--alphas", "0.3,1.0", "--questions", "120", "--fidelity-edges", "6",
        "--fidelity-threshold", "0", "--run-id", run_id, "--reports-dir", str(pytester.path / "reports"), *extra)
    return json.loads((pytester.path / "reports" / run_id / "claims.json").read_text())


def test_k_selects_cells_but_not_their_family(pytester: pytest.Pytester, monkeypatch) -> None:
    tiny_pairs.write_registry(pytester.path / "pairs.toml")
    tiny_pairs.write_dataset(pytester.path / "sums.jsonl")
    monkeypatch.setenv("HARNESS_CACHE", str(pytester.path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full = {c["cell_id"]: c for c in _audit(pytester, "full")["cells"]}
        picked = {c["cell_id"]: c for c in _audit(pytester, "picked", "-k", "C1 and a030")["cells"]}
    finally:
        torch.set_num_threads(threads)
    assert list(picked) == ["C1-intensity-tiny_rl-sums_jsonl-a030"]
    cell = picked["C1-intensity-tiny_rl-sums_jsonl-a030"]
    same = full["C1-intensity-tiny_rl-sums_jsonl-a030"]
    assert cell["p_value"] is not None
    for field in ("verdict", "p_value", "p_holm", "p_bh"):
        assert cell[field] == same[field], field
    for field in ("family", "family_hash", "holm_m", "p_holm_opposite"):
        assert cell["extra"][field] == same["extra"][field], field
    assert cell["extra"]["family_size"] == 2 and cell["extra"]["holm_m"] in (2, 4)


def test_a_model_against_an_exact_copy_gets_no_directional_verdict(pytester: pytest.Pytester, monkeypatch) -> None:
    """The null pair: the tiny llama base against an exact copy of itself (same weights) through the
    real suites. No claim of C1-C7 may be SUPPORTED or REFUTED; unchanged cells say "no change"."""
    from harness.models.tiny import tiny_model_folder

    base = tiny_model_folder("llama")
    copy = tiny_pairs.perturbed_copy(base, pytester.path / "copy", seed=0, scale=0.0)
    (pytester.path / "pairs.toml").write_text(f'''[[pair]]
name = "tiny-null"
family = "llama"
base = "{base}"
post = "{copy}"
algorithm = "grpo"
algorithm_kind = "online-rl"
prompt_template = "bare"
max_new_tokens = 4
datasets = ["sums.jsonl"]
bundled = true
''')
    tiny_pairs.write_dataset(pytester.path / "sums.jsonl")
    monkeypatch.setenv("HARNESS_CACHE", str(pytester.path / "cache"))
    pytester.runpytest_subprocess(  # fresh interpreter: torch modules cannot be registered twice
        str(SUITES), "-p", "no:cacheprovider", "--registry", "pairs.toml", "--datasets", "sums.jsonl",
        "--grader", "lenient",  # the tiny models print a bare sum, no \boxed{} or ####
        "--pairs", "tiny-null", "--alphas", "0.3,0.6,1.0", "--questions", "120", "--fidelity-edges", "6",
        "--fidelity-threshold", "0", "--run-id", "null", "--reports-dir", str(pytester.path / "reports"))
    cells = json.loads((pytester.path / "reports" / "null" / "claims.json").read_text())["cells"]
    paper = [c for c in cells if c["claim_id"] in ("C1", "C2", "C3", "C5", "C6", "C7")]
    assert paper and not [c["cell_id"] for c in paper if c["verdict"] in ("SUPPORTED", "REFUTED")]
    paired = [c for c in paper if c["claim_id"] in ("C1", "C3", "C7")]
    assert all(c["verdict"] == "INCONCLUSIVE" and c["reason"].startswith("no change") for c in paired), \
        [(c["cell_id"], c["verdict"], c["reason"]) for c in paired]
    (accuracy,) = [c for c in cells if c["claim_id"] == "C9"]
    assert accuracy["verdict"] == "INCONCLUSIVE" and accuracy["effect"] == 0
