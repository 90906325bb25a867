"""How faithful EAP scores are to exact ablation.

- `sample_edges`: all edges of a small graph, else a seeded stratified sample by |EAP score|
  (top, middle, bottom, random) so that low-scored edges are checked too.
- `measure_fidelity`: Spearman, Pearson, sign agreement, top-k recall and relative error between
  EAP scores and exact deltas on the same (sample, edge) cells;
- `fidelity_points`: the (EAP, exact) pairs a scatter plot shows.
Causal checks of the ranking are in `harness.circuit.causal`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from harness.circuit.ablation import AblationResult, Edge, ablate_edges
from harness.circuit.batches import (
    Sample,
)
from harness.circuit.eap import EdgeScores
from harness.circuit.graph import Graph
from harness.errors import UserError

STRATA = ("top", "middle", "bottom", "random")


def sample_edges(graph: Graph, importance: torch.Tensor | None, n_edges: int, seed: int = 0,
                 all_below: int = 400) -> list[Edge]:
    """Edges to ablate. importance: [n_src, n_dst] mean |EAP| (None → uniform random).

    Graphs with at most max(all_below, n_edges) real edges are returned whole; otherwise n_edges
    are drawn in equal parts from the top, middle and bottom of the |score| ranking and uniformly.
    """
    real = [tuple(e) for e in graph.mask().nonzero().tolist()]
    if len(real) <= max(all_below, n_edges):
        return real
    rng = np.random.default_rng(seed)
    if importance is None:
        picks = rng.choice(len(real), size=n_edges, replace=False)
        return sorted(real[i] for i in picks)
    values = np.array([float(importance[u, v]) for u, v in real])
    order = np.argsort(-values, kind="stable")          # most important first
    per = n_edges // len(STRATA)
    third = len(order) // 3
    chosen: list[int] = list(order[:per])
    middle = order[third : 2 * third]
    chosen += list(rng.choice(middle, size=min(per, len(middle)), replace=False))
    chosen += list(order[-per:])
    rest = np.setdiff1d(np.arange(len(real)), chosen)
    chosen += list(rng.choice(rest, size=n_edges - len(chosen), replace=False))
    return sorted(real[i] for i in set(int(c) for c in chosen))


@dataclass(frozen=True)
class Fidelity:
    """Agreement of EAP scores with exact ablation deltas over n_cells = samples × edges."""

    spearman: float
    pearson: float
    sign_agreement: float      # fraction of cells with the same sign (|exact| above 1e-9 only)
    topk_recall: float         # of the top-k edges by mean |exact|, the fraction EAP also ranks top-k
    top_k: int
    relative_error: float      # Σ|eap − exact| / Σ|exact|
    n_edges: int
    n_samples: int
    ablation: str

    def as_dict(self) -> dict:
        return asdict(self)


def measure_fidelity(eap: EdgeScores, ablation: AblationResult, top_k: int | None = None) -> Fidelity:
    """Compare EAP scores with exact deltas on the ablated (sample, edge) cells."""
    if list(eap.ids) != list(ablation.ids):
        raise UserError("EAP scores and ablation deltas are for different samples; run both on "
                        "the same input file")
    if eap.scores.shape != ablation.delta.shape:
        raise UserError(f"EAP scores {tuple(eap.scores.shape)} and ablation deltas "
                        f"{tuple(ablation.delta.shape)} differ in shape; use the same layout")
    edges = ablation.edges
    us = torch.tensor([u for u, _ in edges])
    vs = torch.tensor([v for _, v in edges])
    est = eap.scores[:, us, vs].double()           # [n, k]
    exact = ablation.delta[:, us, vs].double()
    est_flat, exact_flat = est.flatten().numpy(), exact.flatten().numpy()
    nonzero = np.abs(exact_flat) > 1e-9
    k = top_k or max(1, len(edges) // 10)
    top_exact = set(torch.argsort(exact.abs().mean(0), descending=True)[:k].tolist())
    top_est = set(torch.argsort(est.abs().mean(0), descending=True)[:k].tolist())
    return Fidelity(
        spearman=float(spearmanr(est_flat, exact_flat).statistic),
        pearson=float(pearsonr(est_flat, exact_flat).statistic),
        sign_agreement=float(np.mean(np.sign(est_flat[nonzero]) == np.sign(exact_flat[nonzero])))
        if nonzero.any() else float("nan"),
        topk_recall=len(top_exact & top_est) / k, top_k=k,
        relative_error=float(np.abs(est_flat - exact_flat).sum() / max(np.abs(exact_flat).sum(), 1e-30)),
        n_edges=len(edges), n_samples=est.shape[0], ablation=ablation.kind.value)


def fidelity_for_model(model: torch.nn.Module, samples: Sequence[Sample], eap: EdgeScores, *,
                       n_edges: int = 64, seed: int = 0, pad_id: int = 0,
                       progress: bool = True) -> tuple[Fidelity, AblationResult]:
    """Sample edges stratified by |EAP|, ablate them exactly (zero), and measure fidelity."""
    edges = sample_edges(eap.graph, eap.scores.abs().mean(0), n_edges, seed)
    result = ablate_edges(model, samples, edges, layout=eap.graph.layout.value, pad_id=pad_id,
                          progress=progress)
    return measure_fidelity(eap, result), result


def fidelity_points(eap: EdgeScores, ablation: AblationResult) -> tuple[list[float], list[float]]:
    """(EAP scores, exact deltas) on the ablated (sample, edge) cells, flattened."""
    us = [u for u, _ in ablation.edges]
    vs = [v for _, v in ablation.edges]
    return eap.scores[:, us, vs].flatten().tolist(), ablation.delta[:, us, vs].flatten().tolist()


