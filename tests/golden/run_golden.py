"""The golden audit: a fixed run of the claim suites on the two tiny pairs (tests/tiny_pairs.py),
whose four models ship in tests/golden/models (nothing is trained in the run).

    .venv/bin/python tests/golden/run_golden.py            # rewrites tests/golden/claims.json
    .venv/bin/python tests/golden/run_golden.py --models   # rebuilds the shipped models first

`tests/test_golden.py` reruns it and compares every field of claims.json with the stored one,
except what names the run or the machine rather than the behaviour: timestamps, run ids,
durations, the code and library versions, the platform, and the folders it ran in (the temporary
one and the checkout's). Verdicts, counts and text compare exactly, floats to a tolerance that
holds across instruction sets (test_golden.TOLERANCE).
Regenerate it only in a commit of its own that says why the verdicts changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "claims.json"
MODELS = Path(__file__).resolve().parent / "models"   # <pair>-base, <pair>-post for each tiny pair
# torch's scalar code, MKL's compatible path and oneDNN capped at SSE4.1: the kernels the stored file was
# computed with; `native` leaves each library its best kernels for the machine
KERNELS = {"portable": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"},
           "native": {}}
SUITE_ARGS = ("--pairs", "tiny-rl,tiny-pref", "--datasets", "sums.jsonl", "--alphas", "0.3,0.6,1.0",
              "--questions", "120", "--fidelity-edges", "12", "--fidelity-samples", "12",
              "--fidelity-threshold", "0",
              "--grader", "lenient",  # the tiny models print a bare sum, no \boxed{} or ####
              "--set", "behaviour_ks=1,2,4,8")   # the tiny graph has 23 edges: k and k matched ones fit
# Fields that describe the run or the machine, not the verdicts.
VOLATILE = {"created", "run_id", "duration", "duration_s", "seconds", "code_version", "libraries",
            "platform", "python", "hostname"}
# Cache keys that hash the models' absolute paths (so they change with the folder the run is in).
PATH_KEYED_FIELDS = {"answers"}
PATH_KEYED = "<path-dependent key>"


def run_audit(workdir: Path, kernels: str = "portable", extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the suites on the shipped tiny pairs under `workdir` (1 torch thread, fresh cache, the
    `kernels` of KERNELS, `extra` suite options after the golden ones) and return the normalised claims.json."""
    script = f"""
import sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from pathlib import Path
import tiny_pairs
tiny_pairs.write_registry(Path('pairs.toml'), models={str(MODELS)!r})
tiny_pairs.write_dataset(Path('sums.jsonl'))
"""
    env = {k: v for k, v in os.environ.items() if k not in KERNELS["portable"]}
    env.update(HARNESS_CACHE=str(workdir / "cache"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0", **KERNELS[kernels])
    subprocess.run([sys.executable, "-c", script], cwd=workdir, env=env, check=True)
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "suites"), "-p", "no:cacheprovider", "-q",
           "--rootdir", str(ROOT), "--registry", "pairs.toml", *SUITE_ARGS,
           "--run-id", "golden", "--reports-dir", str(workdir / "reports"), *extra]
    done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    claims = workdir / "reports" / "golden" / "claims.json"
    if not claims.is_file():
        raise RuntimeError(f"the golden audit wrote no claims.json (exit {done.returncode}):\n"
                           f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return normalise(json.loads(claims.read_text()), workdir)


def normalise(node: Any, workdir: Path) -> Any:
    """`node` without the volatile fields, with the run's folder written as <work>."""
    if isinstance(node, dict):
        return {k: PATH_KEYED if k in PATH_KEYED_FIELDS and isinstance(v, str) else normalise(v, workdir)
                for k, v in node.items() if k not in VOLATILE}
    if isinstance(node, list):
        return [normalise(v, workdir) for v in node]
    if isinstance(node, str):
        node = node.replace(str(workdir.resolve()), "<work>").replace(str(workdir), "<work>")
        return node.replace(str(ROOT), "<checkout>")
    return node


def build_models() -> None:
    """Train the tiny base models (portable kernels, one thread, a fresh cache) and write both pairs'
    base and post folders to MODELS."""
    script = f"""
import sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from pathlib import Path
import tiny_pairs
tiny_pairs.ship_models(Path({str(MODELS)!r}))
"""
    with tempfile.TemporaryDirectory(prefix="golden-models-") as tmp:
        env = dict(os.environ, HARNESS_CACHE=tmp, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0",
                   **KERNELS["portable"])
        subprocess.run([sys.executable, "-c", script], env=env, check=True)


def main() -> None:
    if "--models" in sys.argv[1:]:
        build_models()
    with tempfile.TemporaryDirectory(prefix="golden-") as tmp:
        document = run_audit(Path(tmp))
    GOLDEN.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN.relative_to(ROOT)}: {len(document['cells'])} cells, {document['summary']}")


if __name__ == "__main__":
    main()
