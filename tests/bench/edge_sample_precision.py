"""How precisely does the fidelity check's edge sample estimate intensity, and its change?

The population is known here: EAP's |W| per real edge, mean over a cell's first 10 questions (a stand-in
for exact |delta|, heavy-tailed alike), on the default audit's cells (read from its cache: run
`python -m harness audit` first with the same HARNESS_CACHE). For each design (uniform, stratified by the
base model's |EAP| with inverse-inclusion weights) and sample size, over --draws seeded draws: the
relative standard error of one model's sampled intensity (its level), and the standard error of the
sampled relative change post / base - 1 with both models on one draw (what the robustness C1 reads).

    HARNESS_CACHE=<the default audit's cache> PYTHONPATH=. python tests/bench/edge_sample_precision.py
"""

from __future__ import annotations

import argparse

import numpy as np

from harness.audit.config import AuditConfig
from harness.audit.stages import AuditPipeline
from harness.circuit.fidelity import sample_edges
from harness.cli.audit import AUDIT_BUDGET
from harness.data.selection import SelectionSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", default="smollm2-grpo,smollm2-rloo")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 128])
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--alpha", type=float, default=float(AUDIT_BUDGET["alphas"].split(",")[0]))
    args = parser.parse_args()
    config = AuditConfig(questions=AUDIT_BUDGET["questions"], fidelity_edges=AUDIT_BUDGET["fidelity_edges"],
                         fidelity_samples=AUDIT_BUDGET["fidelity_samples"], selection=SelectionSettings(n=AUDIT_BUDGET["n"]))
    pipe = AuditPipeline(config, progress=False)
    for pair in args.pairs.split(","):
        for dataset in pipe.pair(pair).datasets:
            cell = pipe.cell(pair, dataset, args.alpha)
            graph = cell.base.graph
            index = {tuple(e): i for i, e in enumerate(graph.mask().nonzero().tolist())}
            k = config.fidelity_samples
            base = cell.base.scores.abs()[:k].mean(0)[graph.mask()].double().numpy()
            post = cell.post.scores.abs()[:k].mean(0)[graph.mask()].double().numpy()
            change = post.mean() / base.mean() - 1
            importance = cell.base.scores.abs().mean(0)
            parts = []
            for n in args.sizes:
                for design in ("uniform", "stratified"):
                    levels, changes = [], []
                    for seed in range(args.draws):
                        drawn = sample_edges(graph, n, seed, sampling=design, importance=importance, all_below=0)
                        cols = [index[tuple(e)] for e in drawn.edges]
                        b, p = (np.average(x[cols], weights=drawn.weights) for x in (base, post))
                        levels.append(b / base.mean())
                        changes.append(p / b - 1)
                    parts.append(f"{design} {n}: level rel SE {np.std(levels):.1%}, change SE {np.std(changes):.3f}")
            print(f"{pair} {dataset} ({len(index)} real edges; true change {change:+.3f}): " + "; ".join(parts), flush=True)


if __name__ == "__main__":
    main()
