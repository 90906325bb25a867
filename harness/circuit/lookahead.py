"""Lookahead attribution: a more faithful estimate of single-edge zero-ablation deltas than EAP.

EAP linearises the loss at the destination's input x_v: ΔL(u→v) ≈ −⟨∂L/∂x_v, z_u⟩. Most of its
error comes from the non-linearities right after the edge (the destination's norm, whose scale
moves a lot when a large source is removed; attention saturation, AtP*'s QK problem; the MLP) and
further downstream. Lookahead removes the edge exactly and recomputes the next `steps` blocks
(decoder layers; the final norm + head + loss count as the last block), then linearises what is
left at the residual stream it reaches:

    ΔL(u→v) ≈ ⟨∂L/∂h_s, h_s(edge removed) − h_s(clean)⟩,   s = layer(v) + steps

where h_s is the residual entering layer s (h_L: the residual before the final norm). When the
lookahead reaches the head the value is the exact delta. It generalises AtP*'s QK fix (exact
recomputation of the attention pattern, linear elsewhere) to the whole destination layer and to
any depth: steps = 0 is EAP; steps ≥ L + 1 is exact ablation (the fast path of
`harness.circuit.ablation`).

Cost per sample: one forward + backward (the clean gradients, EAP's own pass), then for each
destination layer l, its 8l+5 edges (paper layout) stacked along the batch and `steps` layers run
on them: about Σ_l (edges into l)·min(steps, L−l) layer evaluations, ≈ 4L·steps forward passes'
worth for small steps (batched 32 variants at a time).
"""

from __future__ import annotations

import torch

from harness.circuit.batches import Batch, LossFn, at_positions, target_nll
from harness.circuit.intervention import InstrumentedModel, RunState, _first


def _one_hot(graph, edges, dtype, device) -> torch.Tensor:
    masks = torch.zeros(len(edges), graph.n_src, graph.n_dst, dtype=dtype, device=device)
    for i, (u, v) in enumerate(edges):
        masks[i, u, v] = 1
    return masks


def lookahead_scores(im: InstrumentedModel, batch: Batch, steps: int, loss_fn: LossFn = target_nll,
                     chunk: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores for every edge of one sample: float32 [1, n_src, n_dst] and the clean loss [1].

    batch: one sample, positions = all (the ablation removes the edge at every position).
    steps: blocks recomputed exactly after the edge; 0 returns EAP's scores from the same pass.
    """
    if batch.input_ids.shape[0] != 1:
        raise ValueError("lookahead_scores takes a batch of one sample")
    graph = im.graph
    n_layers = graph.n_layers
    layers = im.family.layers(im.model)
    device = batch.input_ids.device
    dtype = next(im.model.parameters()).dtype

    # 1. clean forward + backward: EAP scores, each layer's call, the residuals and their gradients
    residuals: dict[int, torch.Tensor] = {}

    def capture(index: int):
        def hook(module, args):
            hidden = args[0]
            if hidden.requires_grad:
                hidden.retain_grad()
            residuals[index] = hidden
        return hook

    handles = [layer.register_forward_pre_hook(capture(j)) for j, layer in enumerate(layers)]
    handles.append(im.family.final_norm(im.model).register_forward_pre_hook(capture(n_layers)))
    state = RunState(scores=torch.zeros(1, graph.n_src, graph.n_dst, dtype=torch.float32, device=device),
                     position_mask=batch.position_mask, record=True)
    try:
        with torch.enable_grad(), im.run_state(state):
            clean_loss = loss_fn(im.logits(batch.input_ids, batch.attention_mask), batch)
            clean_loss.sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    clean_loss = clean_loss.detach().float()
    if steps == 0:
        return state.scores, clean_loss
    hidden = {j: r.detach() for j, r in residuals.items()}
    grads = {j: (r.grad.float() if r.grad is not None else torch.zeros_like(r, dtype=torch.float32))
             for j, r in residuals.items()}
    live = {u: z.detach() for u, z in state.live.items()}
    layer_calls = state.layer_calls

    span = slice(None)
    if loss_fn is target_nll:          # the head only needs the positions that predict targets
        predicting = batch.target_mask[0].nonzero()[:, 0]
        span = slice(int(predicting[0]), int(predicting[-1]) + 1)

    scores = torch.zeros(1, graph.n_src, graph.n_dst, dtype=torch.float32, device=device)
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for v, dest in enumerate(graph.destinations):
        by_layer.setdefault(dest.layer, []).extend((u, v) for u in range(dest.n_parents))

    # 2. per destination layer: remove each edge exactly, run `steps` blocks, linearise the rest
    for layer, edges in sorted(by_layer.items()):
        stop = layer + steps                     # residual index reached; > n_layers: head reached
        n_upstream = 1 + 2 * layer               # sources computed before this layer runs
        for start in range(0, len(edges), chunk):
            part = edges[start : start + chunk]
            k = len(part)
            run = RunState(edge_mask=_one_hot(graph, part, dtype, device),
                           live={u: live[u] for u in range(n_upstream)})
            h = hidden[layer].expand(k, *hidden[layer].shape[1:])
            with torch.no_grad(), im.run_state(run):
                if stop > n_layers:
                    expanded = at_positions(batch, span, k)
                    logits = im.logits_from_layer(layer, h, layer_calls, span)
                    values = loss_fn(logits, expanded).float() - clean_loss
                else:
                    for j in range(layer, stop):
                        args, kwargs = layer_calls[j]
                        h = _first(layers[j](h, *args[1:], **kwargs))
                    change = h.float() - hidden[stop].float()
                    values = (change * grads[stop]).sum(dim=(1, 2))
            us = torch.tensor([u for u, _ in part], device=device)
            vs = torch.tensor([v for _, v in part], device=device)
            scores[0, us, vs] = values
    return scores, clean_loss
