"""Fast ablation path (stacked variants, restart at the destination's layer) vs one full forward
per edge, on the SmolLM2-135M shape (CPU). Measured, never asserted: target ≥ 5× edges per second."""

from __future__ import annotations

import time

import pytest
import torch
from overhead_probe import smollm2_batch, smollm2_shaped_model

from harness.circuit.ablation import fast_edge_deltas, naive_edge_deltas
from harness.circuit.fidelity import sample_edges
from harness.circuit.intervention import InstrumentedModel

TOKENS, EDGES = 128, 48


@pytest.mark.slow
def test_fast_ablation_edges_per_second(benchmark):
    model = smollm2_shaped_model()
    model.requires_grad_(False)
    batch = smollm2_batch(TOKENS)
    with InstrumentedModel(model, "paper") as im:
        edges = sample_edges(im.graph, EDGES, seed=0, all_below=0).edges
        start, start_cpu = time.perf_counter(), time.process_time()
        naive = naive_edge_deltas(im, batch, edges)
        naive_wall, naive_cpu = time.perf_counter() - start, time.process_time() - start_cpu
        start_cpu = time.process_time()
        fast = benchmark.pedantic(fast_edge_deltas, args=(im, batch, edges), rounds=1, iterations=1)
        fast_cpu = time.process_time() - start_cpu
    fast_wall = benchmark.stats.stats.median
    torch.testing.assert_close(fast, naive, rtol=1e-4, atol=1e-5)
    benchmark.extra_info.update(edges=len(edges), naive_wall_s=naive_wall, fast_wall_s=fast_wall,
                                naive_cpu_s=naive_cpu, fast_cpu_s=fast_cpu,
                                speedup_wall=naive_wall / fast_wall, speedup_cpu=naive_cpu / fast_cpu)
    print(f"\n{len(edges)} edges: naive {len(edges) / naive_wall:.2f} edges/s, fast "
          f"{len(edges) / fast_wall:.2f} edges/s (×{naive_wall / fast_wall:.1f} wall, "
          f"×{naive_cpu / fast_cpu:.1f} CPU)")
