"""How faithful EAP scores are to exact ablation, and causal checks of the attribution.

- `sample_edges`: all edges of a small graph, else a seeded stratified sample by |EAP score|
  (top, middle, bottom, random) so that low-scored edges are checked too.
- `measure_fidelity`: Spearman, Pearson, sign agreement, top-k recall and relative error between
  EAP scores and exact deltas on the same (sample, edge) cells; `fidelity_gate` turns the Spearman
  value into the pass/fail gate that every verdict carries.
- `causal_curve`: ablate the top-k EAP edges vs k random edges over log-spaced k, and the
  faithfulness of the circuits they leave.
- `acdc`: greedy pruning at threshold τ in reverse topological order (Conmy et al. 2023).
- `edge_integrated_gradient`: integrated gradients over m for one edge (→ exact delta as steps grow).
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from tqdm.auto import tqdm

from harness.circuit.ablation import AblationResult, Edge, ablate_edges
from harness.circuit.batches import (
    Batch,
    LossFn,
    Positions,
    Sample,
    make_batch,
    target_nll,
)
from harness.circuit.eap import EdgeScores, score_batch
from harness.circuit.graph import Graph
from harness.circuit.intervention import InstrumentedModel, RunState
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


def fidelity_gate(fidelity: Fidelity | None, threshold: float) -> tuple[bool, str]:
    """(passes, reason). A claim cell on scores below the threshold is INVALID, never trusted."""
    if fidelity is None:
        return False, "no fidelity measurement for this pair"
    if not math.isfinite(fidelity.spearman) or fidelity.spearman < threshold:
        return False, (f"EAP fidelity Spearman {fidelity.spearman:.3f} < threshold {threshold:.2f} "
                       f"({fidelity.n_edges} edges × {fidelity.n_samples} samples, "
                       f"{fidelity.ablation} ablation)")
    return True, f"EAP fidelity Spearman {fidelity.spearman:.3f} ≥ threshold {threshold:.2f}"


def fidelity_for_model(model: torch.nn.Module, samples: Sequence[Sample], eap: EdgeScores, *,
                       n_edges: int = 64, seed: int = 0, pad_id: int = 0,
                       progress: bool = True) -> tuple[Fidelity, AblationResult]:
    """Sample edges stratified by |EAP|, ablate them exactly (zero), and measure fidelity."""
    edges = sample_edges(eap.graph, eap.scores.abs().mean(0), n_edges, seed)
    result = ablate_edges(model, samples, edges, layout=eap.graph.layout.value, pad_id=pad_id,
                          progress=progress)
    return measure_fidelity(eap, result), result


def fidelity_scatter(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str) -> bytes:
    """PNG of EAP score against exact delta, one point per (sample, edge), with the y = x line.
    series: {label: (eap_scores, exact_deltas)}, e.g. one series per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    values = []
    for label, (est, exact) in series.items():
        ax.scatter(exact, est, s=8, alpha=0.6, label=label)
        values += list(est) + list(exact)
    low, high = min(values), max(values)
    ax.plot([low, high], [low, high], color="grey", linewidth=1)
    ax.set_xlabel("exact ablation ΔL (nats)")
    ax.set_ylabel("EAP score (nats)")
    ax.set_title(title, fontsize=9)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def fidelity_points(eap: EdgeScores, ablation: AblationResult) -> tuple[list[float], list[float]]:
    """(EAP scores, exact deltas) on the ablated (sample, edge) cells, flattened."""
    us = [u for u, _ in ablation.edges]
    vs = [v for _, v in ablation.edges]
    return eap.scores[:, us, vs].flatten().tolist(), ablation.delta[:, us, vs].flatten().tolist()


def scatter_png(eap: EdgeScores, ablation: AblationResult, path: Path, title: str = "") -> None:
    from harness.files import atomic_write_bytes

    png = fidelity_scatter({"edges": fidelity_points(eap, ablation)}, title or "EAP vs exact edge ablation")
    atomic_write_bytes(Path(path), png)


# -- causal checks -----------------------------------------------------------------------------

def _dataset_loss(im: InstrumentedModel, samples: Sequence[Sample], removed: torch.Tensor,
                  pad_id: int, loss_fn: LossFn) -> float:
    """Mean loss over samples with edges removed; removed: float [n_src, n_dst] m."""
    device = next(im.model.parameters()).device
    batch = make_batch(samples, pad_id, Positions.ALL).to(device)
    m = removed.to(device=device, dtype=next(im.model.parameters()).dtype)[None]
    with torch.no_grad(), im.run_state(RunState(edge_mask=m)):
        return float(loss_fn(im.logits(batch.input_ids, batch.attention_mask), batch).float().mean())


@dataclass(frozen=True)
class CausalCurve:
    """Loss (nats, mean over samples) when removing k edges, and circuit faithfulness.

    loss_removed_top [K], loss_removed_random [K, R]: the top-k EAP edges / k random edges removed.
    faithfulness_top [K], faithfulness_random [K, R]: (L_full_ablation − L_circuit) /
    (L_full_ablation − L_clean) for the circuit that keeps only those k edges (1 = as good as the
    model, 0 = as bad as removing every edge).
    """

    ks: list[int]
    loss_clean: float
    loss_all_removed: float
    loss_removed_top: list[float]
    loss_removed_random: list[list[float]]
    faithfulness_top: list[float]
    faithfulness_random: list[list[float]]


def log_spaced(n_edges: int, points: int = 8) -> list[int]:
    return sorted({max(1, int(round(x))) for x in np.geomspace(1, n_edges, points)})


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

        top_loss, top_faith, rand_loss, rand_faith = [], [], [], []
        for k in tqdm(ks, desc="causal curve", unit="k", disable=not progress):
            top_loss.append(_dataset_loss(im, samples, removed(ranked[:k], False), pad_id, loss_fn))
            top_faith.append(faith(_dataset_loss(im, samples, removed(ranked[:k], True), pad_id, loss_fn)))
            rand_loss.append([_dataset_loss(im, samples, removed(d[:k], False), pad_id, loss_fn)
                              for d in draws])
            rand_faith.append([faith(_dataset_loss(im, samples, removed(d[:k], True), pad_id, loss_fn))
                               for d in draws])
    return CausalCurve(ks, clean, empty, top_loss, rand_loss, top_faith, rand_faith)


def causal_curve_png(curve: dict, title: str) -> bytes:
    """Loss with the top-k EAP edges removed vs k random edges (mean ± range of draws), and the
    faithfulness of the circuits keeping only those k edges. curve: CausalCurve fields."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = curve["ks"]
    rand_loss, rand_faith = np.array(curve["loss_removed_random"]), np.array(curve["faithfulness_random"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    left.plot(ks, curve["loss_removed_top"], "o-", label="top-k EAP removed")
    left.errorbar(ks, rand_loss.mean(1), yerr=[rand_loss.mean(1) - rand_loss.min(1),
                                                rand_loss.max(1) - rand_loss.mean(1)],
                  fmt="s--", label="k random removed")
    left.axhline(curve["loss_clean"], color="grey", linewidth=1, label="clean")
    left.set(xscale="log", xlabel="k edges", ylabel="loss (nats)")
    left.legend(fontsize=8)
    right.plot(ks, curve["faithfulness_top"], "o-", label="circuit: top-k EAP")
    right.plot(ks, rand_faith.mean(1), "s--", label="circuit: k random")
    right.set(xscale="log", xlabel="k edges kept", ylabel="faithfulness")
    right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


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
