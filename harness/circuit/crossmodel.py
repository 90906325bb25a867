"""Edges moved between the two models of a pair, and what the model then does.

Cross-model patching is the intervention primitive with the ablated values taken from the other
model on the same tokens: the recipient's destination v reads

    x_v = clean_v − Σ_u m[u, v] · (z_u − z̃_u),   z̃_u = the donor's source u on the same input,

so a patched edge carries the donor's value and every other edge the recipient's own. Patching all of
v's edges gives v exactly the donor's residual; patching none leaves the recipient unchanged.

Positions beyond the prompt are teacher-forced on shared targets: both models read the same fixed
tokens, the problem's reference solution (a correct worked solution), so every source value the
donor provides sits at a position the recipient also computes. Behaviour is the log-probability of
that correct solution (nats, summed over its tokens: how likely the model is to write it), and
whether every one of its tokens is the argmax (`hit`: greedy decoding would write it).

Why not the alternatives: generating with both models stepping together costs two full forwards
per token and edge set; and the log-probability of the correct final answer after the model's own
reasoning reads nothing of what changed, because the final number is copied from the reasoning
(on the bundled DPO pair, whose accuracy fell 11 points, the two models scored it within 0.02 nats).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from harness.circuit.ablation import record_sources
from harness.circuit.batches import Positions, Sample, make_batch, target_span, token_nll
from harness.circuit.graph import Graph, Layout
from harness.circuit.intervention import InstrumentedModel, RunState
from harness.errors import UserError


@dataclass(frozen=True)
class AnswerScores:
    """Per probe (prompt + a correct solution as targets): logprob, float32 [b]: log p of the
    solution's tokens (nats, summed over them); hit, bool [b]: every one of them is the argmax."""

    logprob: np.ndarray
    hit: np.ndarray


def source_values(model: torch.nn.Module, samples: Sequence[Sample], pad_id: int,
                  layout: Layout | str = Layout.PAPER) -> torch.Tensor:
    """Every source's output on the probes: [n_src, b, t, h], detached, in the model's dtype."""
    device = next(model.parameters()).device
    with InstrumentedModel(model, layout) as im:
        return record_sources(im, make_batch(samples, pad_id, Positions.ALL).to(device))


def answer_scores(model: torch.nn.Module, samples: Sequence[Sample], pad_id: int,
                  edges: torch.Tensor | None = None, donor: torch.Tensor | None = None,
                  layout: Layout | str = Layout.PAPER) -> AnswerScores:
    """The model's scores on the probes with `edges` (float [n_src, n_dst] 0/1 m, None: none)
    intervened on: their source values taken from `donor` ([n_src, b, t, h], the other model's
    `source_values` on the same probes), or zeroed when `donor` is None (zero ablation)."""
    device = next(model.parameters()).device
    batch = make_batch(samples, pad_id, Positions.ALL).to(device)
    dtype = next(model.parameters()).dtype
    with InstrumentedModel(model, layout) as im:
        if donor is not None and donor.shape[:2] != (im.graph.n_src, len(samples)):
            raise UserError(f"donor values of shape {tuple(donor.shape)} do not match {im.graph.n_src} sources "
                            f"x {len(samples)} probes; record them with source_values on the same probes")
        mask = None if edges is None else edges.to(device=device, dtype=dtype)[None]
        span = target_span(batch)
        with torch.no_grad(), im.run_state(RunState(edge_mask=mask, ablated=donor)):
            logits = im.logits(batch.input_ids, batch.attention_mask, keep_last=span)
    targets, target_mask = batch.targets[:, -span:], batch.target_mask[:, -span:]
    logprob = -token_nll(logits.float(), targets, target_mask).sum(-1)
    top = (logits.argmax(-1) == targets.clamp(min=0)) | (target_mask == 0)
    return AnswerScores(logprob.cpu().numpy(), top.all(-1).cpu().numpy())


def top_edges(score: torch.Tensor, graph: Graph, k: int) -> torch.Tensor:
    """0/1 float [n_src, n_dst]: the k real edges of largest `score` [n_src, n_dst]."""
    real = graph.mask()
    values = torch.where(real, score.float(), torch.tensor(-torch.inf))
    chosen = torch.zeros_like(values)
    chosen.view(-1)[values.view(-1).topk(min(k, int(real.sum()))).indices] = 1.0
    return chosen


def matched_edges(chosen: torch.Tensor, magnitude: torch.Tensor, graph: Graph, bins: int,
                  rng: np.random.Generator) -> torch.Tensor:
    """0/1 float [n_src, n_dst]: for each chosen edge, one random real edge outside `chosen` from the
    same of `bins` equal-count bins of `magnitude` [n_src, n_dst] (drawn without replacement): a set
    of the same size and magnitude profile that was not chosen for what the choice reads."""
    real = graph.mask()
    flat_mag = magnitude.float()[real].numpy()
    edges = real.nonzero().numpy()                                   # [E, 2], the order of flat_mag
    cuts = np.quantile(flat_mag, np.linspace(0, 1, bins + 1)[1:-1])
    bin_of = np.searchsorted(cuts, flat_mag, side="right")
    taken = chosen.bool()[real].numpy().copy()
    out = torch.zeros_like(chosen)
    for index in np.flatnonzero(chosen.bool()[real].numpy()):
        free = np.flatnonzero((bin_of == bin_of[index]) & ~taken)
        if not free.size:   # the bin is used up: the nearest magnitudes outside it
            free = np.flatnonzero(~taken)
            free = free[np.argsort(np.abs(flat_mag[free] - flat_mag[index]))[:1]]
        pick = int(rng.choice(free))
        taken[pick] = True
        out[tuple(edges[pick])] = 1.0
    return out


def source_magnitude(values: torch.Tensor, samples: Sequence[Sample], graph: Graph) -> torch.Tensor:
    """Per edge [n_src, n_dst]: the mean L2 norm over the probes' real positions of its source's
    `values` ([n_src, b, t, h]: a model's outputs, or the difference of two models' outputs)."""
    real = torch.zeros(values.shape[1], values.shape[2])
    for i, s in enumerate(samples):
        real[i, :s.input_length] = 1.0
    norms = values.float().norm(dim=-1)                               # [n_src, b, t]
    per_source = (norms * real).sum((1, 2)) / real.sum()
    return per_source[:, None].expand(graph.n_src, graph.n_dst).clone()


DIRECTIONS = ("restore", "install", "necessity")


def _curve(recipient, probes, pad_id, graph, ks, choose, magnitude, donor, bins, rng) -> dict:
    """Scores of `recipient` with the top-k edges of `choose` and k matched random ones intervened on."""
    out = {"ks": list(ks), "top": [], "matched": [], "top_hit": [], "matched_hit": []}
    for k in ks:
        top = top_edges(choose, graph, k)
        matched = matched_edges(top, magnitude, graph, bins, rng)
        for name, edges in (("top", top), ("matched", matched)):
            scores = answer_scores(recipient, probes, pad_id, edges, donor)
            out[name].append(scores.logprob.tolist())
            out[f"{name}_hit"].append(scores.hit.tolist())
    return out


def intervention_curves(base: torch.nn.Module, post: torch.nn.Module, probes: list[Sample],
                        eap_mean: dict[str, torch.Tensor], graph: Graph, ks: Sequence[int], bins: int, seed: int,
                        pad_id: int) -> dict:
    """The three interventions of a pair on shared probes, each over `ks`, matched random edges beside:

    - restore: the post model with the base's values patched into the k edges of largest |EAP change|
      (post − base mean score, `eap_mean` [n_src, n_dst] per side); matched on the source's patch
      size ||z_post − z_base||;
    - install: the base model with the post's values patched into the same edges;
    - necessity: the post model with its k edges of largest |EAP| zero-ablated; matched on the
      source's size ||z_post||.

    Each direction returns "clean" (the recipient's own scores), "target" (the donor's; none for
    necessity), "top"/"matched" [K][n] log-probs and hits, and per k "change_share": the chosen edges'
    share of the summed change in |EAP| (post − base), the intensity change they carry.
    """
    n_edges = graph.n_edges
    if max(ks) > n_edges // 2:
        raise UserError(f"k = {max(ks)} edges asked, but the graph has {n_edges} real edges: a matched random set "
                        f"needs k more outside the chosen ones; keep behaviour_ks at most {n_edges // 2}")
    rng = np.random.default_rng(seed)
    change = eap_mean["post"] - eap_mean["base"]
    intensity_change = eap_mean["post"].abs() - eap_mean["base"].abs()
    total_change = float(intensity_change[graph.mask()].sum())

    def shares(choose):
        return [float(intensity_change[top_edges(choose, graph, k).bool()].sum()) / total_change
                if total_change else None for k in ks]

    values = {side: source_values(model, probes, pad_id, graph.layout) for side, model in (("base", base), ("post", post))}
    clean = {side: answer_scores(model, probes, pad_id) for side, model in (("base", base), ("post", post))}
    patch_size = source_magnitude(values["post"] - values["base"], probes, graph)
    out = {}
    for direction, recipient, side, donor in (("restore", post, "post", "base"), ("install", base, "base", "post")):
        curve = _curve(recipient, probes, pad_id, graph, ks, change.abs(), patch_size, values[donor], bins, rng)
        out[direction] = {**curve, "clean": clean[side].logprob.tolist(), "clean_hit": clean[side].hit.tolist(),
                          "target": clean[donor].logprob.tolist(), "target_hit": clean[donor].hit.tolist(),
                          "change_share": shares(change.abs())}
    curve = _curve(post, probes, pad_id, graph, ks, eap_mean["post"].abs(),
                   source_magnitude(values["post"], probes, graph), None, bins, rng)
    out["necessity"] = {**curve, "clean": clean["post"].logprob.tolist(), "clean_hit": clean["post"].hit.tolist(),
                        "target": None, "target_hit": None, "change_share": shares(eap_mean["post"].abs())}
    return {**out, "probes": [p.id for p in probes]}
