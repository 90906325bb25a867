"""Causal checks of the attribution, all through the same intervention primitive as EAP.

- `causal_curve`: ablate the top-k EAP edges vs k random edges over log-spaced k, and the
  faithfulness of the circuits they leave. Beating random is nearly automatic for any ranking that
  correlates with an edge's size, so the audit does not decide on it.
- `topk_against_exact`: the check the audit decides on. Among edges whose exact single-edge deltas
  are known, remove EAP's top k and exact ablation's own top k (and k random ones, as a floor)
  together: does EAP's choice do as much damage as the best choice single-edge ablation can make?
- `acdc`: greedy pruning at threshold τ in reverse topological order (Conmy et al. 2023).
- `edge_integrated_gradient`: integrated gradients over m for one edge (→ exact delta as steps grow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.circuit.ablation import Edge
from harness.circuit.batches import (
    Batch,
    LossFn,
    Positions,
    Sample,
    make_batch,
    target_nll,
)
from harness.circuit.eap import EdgeScores, batch_loss, score_batch
from harness.circuit.graph import Graph
from harness.circuit.intervention import InstrumentedModel, RunState


def _sample_losses(im: InstrumentedModel, samples: Sequence[Sample], removed: torch.Tensor,
                   pad_id: int, loss_fn: LossFn) -> list[float]:
    """Each sample's loss with edges removed; removed: float [n_src, n_dst] m."""
    device = next(im.model.parameters()).device
    batch = make_batch(samples, pad_id, Positions.ALL).to(device)
    m = removed.to(device=device, dtype=next(im.model.parameters()).dtype)[None]
    with torch.no_grad(), im.run_state(RunState(edge_mask=m)):
        return batch_loss(im, batch, loss_fn).float().cpu().tolist()


def _dataset_loss(im: InstrumentedModel, samples: Sequence[Sample], removed: torch.Tensor,
                  pad_id: int, loss_fn: LossFn) -> float:
    """Mean loss over samples with edges removed; removed: float [n_src, n_dst] m."""
    return float(np.mean(_sample_losses(im, samples, removed, pad_id, loss_fn)))


@dataclass(frozen=True)
class CausalCurve:
    """Loss (nats, mean over samples) when removing k edges, and circuit faithfulness.

    loss_removed_top [K], loss_removed_random [K, R]: the top-k EAP edges / k random edges removed.
    question_loss_top [K, n], question_loss_random [K, R, n]: the same per question (what a paired
    test over questions reads). faithfulness_top [K], faithfulness_random [K, R]: (L_full_ablation −
    L_circuit) / (L_full_ablation − L_clean) for the circuit that keeps only those k edges (1 = as
    good as the model, 0 = as bad as removing every edge).
    """

    ks: list[int]
    loss_clean: float
    loss_all_removed: float
    loss_removed_top: list[float]
    loss_removed_random: list[list[float]]
    faithfulness_top: list[float]
    faithfulness_random: list[list[float]]
    question_loss_top: list[list[float]]
    question_loss_random: list[list[list[float]]]


def log_spaced(n_edges: int, points: int = 8) -> list[int]:
    return sorted({max(1, int(round(x))) for x in np.geomspace(1, n_edges, points)})


def causal_ks(n_pool: int) -> list[int]:
    """The k grid of `topk_against_exact` for a pool of n_pool edges: 1, an eighth and a quarter of it
    (a top k is a choice only while k is well below the pool)."""
    if n_pool < 2:
        raise ValueError(f"a causal check needs a pool of at least 2 edges, got {n_pool}")
    return sorted({1, max(1, n_pool // 8), max(1, n_pool // 4)})


def causal_curve(model: torch.nn.Module, samples: Sequence[Sample], eap: EdgeScores, *,
                 ks: Sequence[int] | None = None, n_random: int = 5, seed: int = 0, pad_id: int = 0,
                 loss_fn: LossFn = target_nll, progress: bool = True) -> CausalCurve:
    """Top-k EAP edges (by mean |score|) against k random real edges, several random draws."""
    graph = eap.graph
    real = graph.mask().nonzero()
    importance = eap.scores.abs().mean(0)[real[:, 0], real[:, 1]]
    ranked = real[torch.argsort(importance, descending=True)]
    ks = list(ks or log_spaced(len(real)))
    rng = np.random.default_rng(seed)
    draws = [real[torch.from_numpy(rng.permutation(len(real)))] for _ in range(n_random)]

    def removed(edges: torch.Tensor, keep: bool) -> torch.Tensor:
        m = torch.zeros(graph.n_src, graph.n_dst)
        m[edges[:, 0], edges[:, 1]] = 1.0
        return graph.mask().float() - m if keep else m

    with InstrumentedModel(model, graph.layout.value) as im:
        clean = _dataset_loss(im, samples, torch.zeros(graph.n_src, graph.n_dst), pad_id, loss_fn)
        empty = _dataset_loss(im, samples, graph.mask().float(), pad_id, loss_fn)

        def faith(loss: float) -> float:
            return (empty - loss) / (empty - clean) if empty != clean else float("nan")

        top_q, top_faith, rand_q, rand_faith = [], [], [], []
        for k in tqdm(ks, desc="causal curve", unit="k", disable=not progress):
            top_q.append(_sample_losses(im, samples, removed(ranked[:k], False), pad_id, loss_fn))
            top_faith.append(faith(_dataset_loss(im, samples, removed(ranked[:k], True), pad_id, loss_fn)))
            rand_q.append([_sample_losses(im, samples, removed(d[:k], False), pad_id, loss_fn) for d in draws])
            rand_faith.append([faith(_dataset_loss(im, samples, removed(d[:k], True), pad_id, loss_fn))
                               for d in draws])
    top_loss = [float(np.mean(q)) for q in top_q]
    rand_loss = [[float(np.mean(q)) for q in per_draw] for per_draw in rand_q]
    return CausalCurve(ks, clean, empty, top_loss, rand_loss, top_faith, rand_faith, top_q, rand_q)


@dataclass(frozen=True)
class TopKCheck:
    """Joint removal of k edges chosen three ways from one pool of edges with known exact deltas.

    ks [K]; edges: the pool, (u, v) each; loss_clean [n]: each question's clean loss (nats);
    question_loss_eap / question_loss_exact / question_loss_random [K, n]: each question's loss with
    the k edges of largest mean EAP score / of largest mean exact delta / k drawn at random (seeded)
    removed together; chosen_eap / chosen_exact [K]: the edges (indices into `edges`) each removed.
    """

    ks: list[int]
    edges: list[list[int]]
    loss_clean: list[float]
    question_loss_eap: list[list[float]]
    question_loss_exact: list[list[float]]
    question_loss_random: list[list[float]]
    chosen_eap: list[list[int]]
    chosen_exact: list[list[int]]


def topk_against_exact(model: torch.nn.Module, samples: Sequence[Sample], graph: Graph, edges: Sequence[Edge],
                       eap: np.ndarray, exact: np.ndarray, *, ks: Sequence[int], seed: int = 0, pad_id: int = 0,
                       loss_fn: LossFn = target_nll, progress: bool = True) -> TopKCheck:
    """EAP's top-k edges against exact ablation's top-k, from the same pool, removed jointly.

    eap, exact: float [n, E], the EAP score and the exact single-edge delta (nats; positive = removing
    the edge raises the loss) of each pool edge on each sample. Each ranking is by its mean over the
    samples, largest first: the edges predicted, and the edges measured, to hurt most when removed.
    Each k in `ks` must be at most E // 2, so that the top k is a choice.
    """
    eap, exact = np.asarray(eap, dtype=np.float64), np.asarray(exact, dtype=np.float64)
    n_pool = len(edges)
    if eap.shape != (len(samples), n_pool) or exact.shape != eap.shape:
        raise ValueError(f"eap and exact must be [samples, edges] = [{len(samples)}, {n_pool}]; "
                         f"got {eap.shape} and {exact.shape}")
    if not ks or min(ks) < 1 or max(ks) > n_pool // 2:
        raise ValueError(f"each k must be in [1, {n_pool // 2}] (half of the {n_pool} pool edges), got {list(ks)}")
    by_eap = np.argsort(-eap.mean(0), kind="stable")
    by_exact = np.argsort(-exact.mean(0), kind="stable")
    draw = np.random.default_rng(seed).permutation(n_pool)
    pool = torch.tensor([list(e) for e in edges], dtype=torch.long)

    def removed(chosen: np.ndarray) -> torch.Tensor:
        m = torch.zeros(graph.n_src, graph.n_dst)
        picked = pool[torch.from_numpy(np.asarray(chosen, dtype=np.int64))]
        m[picked[:, 0], picked[:, 1]] = 1.0
        return m

    with InstrumentedModel(model, graph.layout.value) as im:
        clean = _sample_losses(im, samples, torch.zeros(graph.n_src, graph.n_dst), pad_id, loss_fn)
        losses = {"eap": [], "exact": [], "random": []}
        for k in tqdm(ks, desc="top-k vs exact top-k", unit="k", disable=not progress):
            for name, order in (("eap", by_eap), ("exact", by_exact), ("random", draw)):
                losses[name].append(_sample_losses(im, samples, removed(order[:k]), pad_id, loss_fn))
    return TopKCheck(list(ks), [list(e) for e in edges], clean, losses["eap"], losses["exact"], losses["random"],
                     [by_eap[:k].tolist() for k in ks], [by_exact[:k].tolist() for k in ks])


def kl_to_clean(clean_logits: torch.Tensor) -> LossFn:
    """ACDC's metric: KL(clean ‖ current) of next-token distributions, mean over target positions."""
    clean_logprobs = torch.log_softmax(clean_logits.float(), -1)

    def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        logprobs = torch.log_softmax(logits.float(), -1)
        kl = (clean_logprobs.exp() * (clean_logprobs - logprobs)).sum(-1) * batch.target_mask
        return kl.sum(-1) / batch.target_mask.sum(-1)
    return loss


@dataclass(frozen=True)
class AcdcResult:
    """circuit: bool [n_src, n_dst] kept edges; metric: KL of the circuit's outputs to the model's;
    faithfulness: (L_empty − L_circuit)/(L_empty − L_clean) on the task loss."""

    circuit: torch.Tensor
    threshold: float
    metric: float
    n_edges_kept: int
    faithfulness: float


def acdc(model: torch.nn.Module, samples: Sequence[Sample], *, threshold: float, layout: str = "paper",
         pad_id: int = 0, progress: bool = True) -> AcdcResult:
    """Visit destinations from the sink backwards; remove each incoming edge whose removal raises
    the KL to the clean model by less than `threshold` (nats); keep the rest."""
    device = next(model.parameters()).device
    batch = make_batch(samples, pad_id, Positions.ALL).to(device)
    dtype = next(model.parameters()).dtype
    with InstrumentedModel(model, layout) as im:
        graph = im.graph
        with torch.no_grad(), im.run_state(RunState()):
            clean_logits = im.logits(batch.input_ids, batch.attention_mask)
        metric_fn = kl_to_clean(clean_logits)
        removed = torch.zeros(1, graph.n_src, graph.n_dst, dtype=dtype, device=device)

        def metric() -> float:
            with torch.no_grad(), im.run_state(RunState(edge_mask=removed)):
                return float(metric_fn(im.logits(batch.input_ids, batch.attention_mask), batch).mean())

        current = metric()
        order = [(u, v) for v in reversed(range(graph.n_dst))
                 for u in reversed(range(graph.destinations[v].n_parents))]
        for u, v in tqdm(order, desc=f"ACDC τ={threshold:g}", unit="edge", disable=not progress):
            removed[0, u, v] = 1
            trial = metric()
            if trial - current < threshold:
                current = trial
            else:
                removed[0, u, v] = 0
    circuit = graph.mask() & (removed[0] == 0).cpu()
    with InstrumentedModel(model, layout) as im:
        clean = _dataset_loss(im, samples, torch.zeros(graph.n_src, graph.n_dst), pad_id, target_nll)
        empty = _dataset_loss(im, samples, graph.mask().float(), pad_id, target_nll)
        kept = _dataset_loss(im, samples, (graph.mask() & ~circuit).float(), pad_id, target_nll)
    faithfulness = (empty - kept) / (empty - clean) if empty != clean else float("nan")
    return AcdcResult(circuit, threshold, current, int(circuit.sum()), faithfulness)


def edge_integrated_gradient(model: torch.nn.Module, sample: Sample, edge: Edge, steps: int, *,
                             layout: str = "paper", loss_fn: LossFn = target_nll) -> float:
    """∫₀¹ ∂L/∂m[u,v] dm along the path that removes only this edge (midpoint rule, `steps` points).
    Equals the exact delta as steps → ∞; steps = 1 at m = 0 would be plain EAP."""
    u, v = edge
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    batch = make_batch([sample], 0, Positions.ALL).to(device)
    total = 0.0
    with InstrumentedModel(model, layout) as im:
        for i in range(steps):
            m = torch.zeros(1, im.graph.n_src, im.graph.n_dst, dtype=dtype, device=device)
            m[0, u, v] = (i + 0.5) / steps
            scores, _ = score_batch(im, batch, loss_fn, edge_mask=m)
            total += float(scores[0, u, v])
    return total / steps
