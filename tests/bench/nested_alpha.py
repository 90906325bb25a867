"""EAP for several α of one question: one forward over the longest prefix then one backward per α
(the prefix structure: a causal model's activations at the first P + T_cut(α) positions do not see
the later tokens), against one forward + backward per α (what the audit runs).

Random weights of SmolLM2-135M's shape (the registry's architecture table), float32, batch 1; the
prompt and answer are random token ids of the stated lengths, since timing does not depend on
them. For each (prompt tokens P, answer tokens T̄) it checks that both give the same scores (max
relative difference printed) and prints the wall time of each (min over --repeats) and their ratio.

    PYTHONPATH=. python tests/bench/nested_alpha.py --lengths 90:40 150:500 --repeats 3

The cost model it tests: with F(L) the forward cost at L tokens and a backward ≈ 2F, separate
passes cost Σ_α 3F(P + T_α), the shared forward F(P + T_max) + K·2F(P + T_max): the sharing wins
only when the prompt is long against the answer (for α = 0.03, 0.1, 0.3, 0.5: P > 0.57 T̄).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from harness.circuit.batches import Positions, Sample, last_positions, make_batch, target_nll
from harness.circuit.eap import score_batch
from harness.circuit.intervention import InstrumentedModel, RunState
from harness.models.registry import load_architectures
from harness.plan.measure import random_model

ALPHAS = (0.03, 0.1, 0.3, 0.5)


def t_cuts(answer_tokens: int) -> list[int]:
    return [max(1, math.ceil(a * answer_tokens)) for a in ALPHAS]


def separate(im: InstrumentedModel, prompt: tuple[int, ...], answer: tuple[int, ...]) -> list[torch.Tensor]:
    """One forward + backward per α (the audit's EAP): scores [n_src, n_dst] per α."""
    return [score_batch(im, make_batch([Sample("q", prompt, answer[:t])], 0, Positions.ALL))[0][0]
            for t in t_cuts(len(answer))]


def shared(im: InstrumentedModel, prompt: tuple[int, ...], answer: tuple[int, ...]) -> list[torch.Tensor]:
    """One forward over prompt + the longest α's prefix, then one backward per α of that α's loss
    (its targets only) with the gradient masked to its own positions: scores per α."""
    cuts = t_cuts(len(answer))
    batch = make_batch([Sample("q", prompt, answer[:max(cuts)])], 0, Positions.ALL)
    graph = im.graph
    state = RunState(scores=torch.zeros(1, graph.n_src, graph.n_dst), position_mask=batch.position_mask)
    out = []
    with torch.enable_grad(), im.run_state(state):
        span = max(cuts)   # the targets are the last `span` positions: the head runs there only
        logits = im.logits(batch.input_ids, batch.attention_mask, keep_last=span)
        tail = last_positions(batch, span)
        for index, t in enumerate(cuts):
            mask = torch.zeros_like(tail.target_mask)
            mask[0, :t] = 1
            own = type(tail)(tail.input_ids, tail.attention_mask, tail.targets, mask, tail.position_mask)
            state.scores = torch.zeros(1, graph.n_src, graph.n_dst)
            target_nll(logits, own).sum().backward(retain_graph=index < len(cuts) - 1)
            out.append(state.scores[0])
    return out


def timed(fn, repeats: int) -> tuple[float, list[torch.Tensor]]:
    best, result = math.inf, None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", nargs="+", default=["90:40", "150:500"], help="P:T̄ pairs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = {"model_type": "llama", **load_architectures()["bundled:smollm2-135m-instruct"]}
    model = random_model(config, "float32", "cpu")
    generator = torch.Generator().manual_seed(0)
    print(f"torch threads {torch.get_num_threads()}; alphas {ALPHAS}")
    with InstrumentedModel(model) as im:
        for text in args.lengths:
            p, t = (int(x) for x in text.split(":"))
            ids = torch.randint(10, config["vocab_size"], (p + t,), generator=generator).tolist()
            prompt, answer = tuple(ids[:p]), tuple(ids[p:])
            time_separate, by_alpha = timed(lambda: separate(im, prompt, answer), args.repeats)
            time_shared, joint = timed(lambda: shared(im, prompt, answer), args.repeats)
            worst = max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(by_alpha, joint))
            print(f"P={p} T̄={t} T_cut={t_cuts(t)}: 4 × one α {time_separate:.2f} s, one forward for all α "
                  f"{time_shared:.2f} s, ratio shared/separate {time_shared / time_separate:.2f}; "
                  f"max relative score difference {worst:.1e}")


if __name__ == "__main__":
    main()
