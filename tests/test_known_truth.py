"""System-level checks through the real suites on tiny pairs whose truth is known by construction.

- Function-identical pair: the tiny llama base against a model that computes the same function with
  every weight changed (residual dimensions permuted, norms rescaled and compensated, MLP units
  permuted; `tiny_pairs.function_identical_copy`). Its EAP scores differ from the base's by float
  rounding only (~1e-6 relative), consistent in sign: no claim may be decided on that.
- Planted pair: the base against an exact copy, with the copy's edge scores multiplied by 1.3 where
  the EAP stage hands them on (the truth planted in the tensors the claims receive). Known answers:
  intensity rises by 30 % in every cell (C1 SUPPORTED); complexity with per-model range, kurtosis,
  node entropy and diversity are scale-free (C2, C3, C6, C7: no change); the change does not move
  with alpha (C5 not SUPPORTED or REFUTED); accuracy is unchanged (C9 no change). A preference pair
  that is an exact copy, unscaled, changes less than the online-RL pair (C4 SUPPORTED).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_pairs

pytest_plugins = ["pytester"]

SUITES = Path(__file__).resolve().parent.parent / "suites"

PLANT = '''
import dataclasses

from harness.audit.stages import AuditPipeline

_computed = AuditPipeline.edge_scores


def planted(self, spec, side, fingerprint, rows):
    """The EAP stage's scores, with the planted pair's post-model scores x 1.3."""
    key, scores = _computed(self, spec, side, fingerprint, rows)
    if side == "post" and spec.name == "tiny-planted":
        scores = dataclasses.replace(scores, scores=scores.scores * 1.3)
    return key, scores


AuditPipeline.edge_scores = planted
'''


def _registry(path: Path, pairs: list[tuple[str, Path, str]]) -> None:
    from harness.models.tiny import tiny_model_folder

    base = tiny_model_folder("llama")
    path.write_text("\n".join(f'''[[pair]]
name = "{name}"
family = "llama"
base = "{base}"
post = "{post}"
algorithm = "{"grpo" if kind == "online-rl" else "dpo"}"
algorithm_kind = "{kind}"
prompt_template = "bare"
max_new_tokens = 4
datasets = ["sums.jsonl"]
bundled = true
''' for name, post, kind in pairs))


def _run(pytester: pytest.Pytester, run_id: str, pairs: str) -> list[dict]:
    tiny_pairs.write_dataset(pytester.path / "sums.jsonl")
    # a fresh interpreter: an in-process run would unload torch modules that cannot be registered twice
    pytester.runpytest_subprocess(
        str(SUITES), "-p", "no:cacheprovider", "--registry", "pairs.toml", "--datasets", "sums.jsonl",
        "--grader", "lenient",  # the tiny models print a bare sum, no \\boxed{} or ####
        "--pairs", pairs, "--alphas", "0.3,0.6,1.0", "--questions", "120", "--fidelity-edges", "6",
        "--fidelity-threshold", "0", "--run-id", run_id, "--reports-dir", str(pytester.path / "reports"))
    return json.loads((pytester.path / "reports" / run_id / "claims.json").read_text())["cells"]


def test_a_function_identical_model_with_other_weights_decides_nothing(pytester: pytest.Pytester,
                                                                        monkeypatch) -> None:
    from harness.models.tiny import tiny_model_folder

    same = tiny_pairs.function_identical_copy(tiny_model_folder("llama"), pytester.path / "same", seed=1)
    _registry(pytester.path / "pairs.toml", [("tiny-same", same, "online-rl")])
    monkeypatch.setenv("HARNESS_CACHE", str(pytester.path / "cache"))
    cells = _run(pytester, "same", "tiny-same")
    paper = [c for c in cells if c["claim_id"] in ("C1", "C2", "C3", "C5", "C6", "C7")]
    assert len(paper) == 16, [c["cell_id"] for c in paper]   # C1-C3, C7 x 3 alphas, C5 x 3 metrics, C6
    decided = [(c["cell_id"], c["verdict"], c["reason"]) for c in paper if c["verdict"] in ("SUPPORTED", "REFUTED")]
    assert not decided
    for c in paper:
        if c["claim_id"] in ("C1", "C2", "C3", "C7"):
            assert c["verdict"] == "INCONCLUSIVE" and c["reason"].startswith("no change"), (c["cell_id"], c["reason"])


def test_a_pair_with_a_planted_rescaling_gets_the_known_verdicts(pytester: pytest.Pytester, monkeypatch) -> None:
    from harness.models.tiny import tiny_model_folder

    copy = tiny_pairs.perturbed_copy(tiny_model_folder("llama"), pytester.path / "copy", seed=0, scale=0.0)
    _registry(pytester.path / "pairs.toml", [("tiny-planted", copy, "online-rl"),
                                             ("tiny-pref-copy", copy, "offline-preference")])
    pytester.makeconftest(PLANT)
    monkeypatch.setenv("HARNESS_CACHE", str(pytester.path / "cache"))
    cells = _run(pytester, "planted", "tiny-planted,tiny-pref-copy")
    by_claim: dict[str, list[dict]] = {}
    for c in cells:
        by_claim.setdefault(c["claim_id"], []).append(c)
    verdicts = {k: {(c["cell_id"], c["verdict"]) for c in v} for k, v in by_claim.items()}
    assert all(c["verdict"] == "SUPPORTED" for c in by_claim["C1"]) and len(by_claim["C1"]) == 3, verdicts["C1"]
    for c in by_claim["C1"]:
        assert c["extra"]["relative_change"] == pytest.approx(0.3, rel=1e-4)
    for claim_id in ("C2", "C3", "C7", "C6"):
        assert all(c["verdict"] == "INCONCLUSIVE" and c["reason"].startswith("no change") for c in by_claim[claim_id]), \
            [(c["cell_id"], c["reason"]) for c in by_claim[claim_id]]
    assert all(c["verdict"] == "INCONCLUSIVE" for c in by_claim["C5"]), verdicts["C5"]
    intensity_c4 = [c for c in by_claim["C4"] if c["metric"] == "intensity"]
    assert intensity_c4 and all(c["verdict"] == "SUPPORTED" for c in intensity_c4), verdicts["C4"]
    assert all(c["verdict"] == "INCONCLUSIVE" and c["effect"] == 0 for c in by_claim["C9"]), verdicts["C9"]
