"""Exact ablation of a bfloat16 model: float32 a layer at a time (casting each unit as it runs)
against the former float32 copy, and the head over 64 target positions at a time against the whole
span, on SmolLM2-135M's shape (CPU, 512 tokens, 64 edges). Measured, never asserted: run
`make bench`; the ratios land in the benchmarks' extra_info and are printed. Memory is the
planner's business (tests/test_plan.py measures it).
"""

from __future__ import annotations

import copy
import time

import pytest
import torch
from overhead_probe import smollm2_shaped_model

from harness.circuit.ablation import ablate_edges
from harness.circuit.batches import Sample
from harness.circuit.fidelity import sample_edges
from harness.circuit.graph import build_graph

TOKENS, EDGES = 512, 64


def _sample() -> Sample:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 49152, (TOKENS + 1,), generator=generator).tolist()
    return Sample("bench", tuple(ids[: TOKENS // 2]), tuple(ids[TOKENS // 2:]))


def _cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


@pytest.mark.slow
def test_layerwise_upcast_time_vs_a_float32_copy(benchmark):
    model = smollm2_shaped_model().to(torch.bfloat16)
    model.requires_grad_(False)
    sample = _sample()
    edges = sample_edges(build_graph(30), EDGES, seed=0, all_below=0).edges
    run = (lambda m: ablate_edges(m, [sample], edges, progress=False))
    copied = _cpu_seconds(lambda: run(copy.deepcopy(model).float()))       # the former path, copy included
    layerwise = _cpu_seconds(lambda: run(model))
    benchmark.pedantic(run, args=(model,), rounds=1, iterations=1)
    benchmark.extra_info.update({"copy_cpu_s": copied, "layerwise_cpu_s": layerwise, "ratio": layerwise / copied})
    print(f"\nbf16 ablation, {EDGES} edges at {TOKENS} tokens: float32 a layer at a time {layerwise:.1f} s CPU "
          f"vs a float32 copy {copied:.1f} s = {layerwise / copied:.2f}x")


@pytest.mark.slow
def test_chunked_head_time_vs_the_whole_span(benchmark):
    model = smollm2_shaped_model()
    model.requires_grad_(False)
    sample = _sample()
    edges = sample_edges(build_graph(30), EDGES, seed=0, all_below=0).edges
    run = (lambda chunk: ablate_edges(model, [sample], edges, progress=False, logit_chunk=chunk))
    whole = _cpu_seconds(lambda: run(TOKENS))
    chunked = _cpu_seconds(lambda: run(64))
    benchmark.pedantic(run, args=(64,), rounds=1, iterations=1)
    benchmark.extra_info.update({"whole_cpu_s": whole, "chunked_cpu_s": chunked, "ratio": chunked / whole})
    print(f"\nablation, {EDGES} edges at {TOKENS} tokens: head over 64 positions at a time {chunked:.1f} s CPU "
          f"vs the whole span {whole:.1f} s = {chunked / whole:.2f}x")
