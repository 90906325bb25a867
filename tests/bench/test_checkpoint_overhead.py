"""Checkpointed EAP's time against plain EAP on the same shape (SmolLM2-135M, 1024 tokens, CPU).

Measured, never asserted: run `make bench`; the ratio lands in the benchmark's extra_info and is
printed. One extra forward of every segment is the floor (about 4/3 of a forward + backward); the
target is <= 1.4x. Memory is the planner's business (tests/test_plan.py measures it).
"""

from __future__ import annotations

import time

import pytest
from overhead_probe import smollm2_batch, smollm2_shaped_model

from harness.circuit.eap import score_batch
from harness.circuit.intervention import InstrumentedModel

TOKENS = 1024


def _median_cpu_seconds(fn, repeats: int = 3) -> float:
    """Median process CPU seconds over repeats after one warm-up call (fairer than wall time on a
    shared machine)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return sorted(times)[len(times) // 2]


@pytest.mark.slow
@pytest.mark.parametrize("segments", [2, 6])
def test_checkpointed_eap_time_vs_plain(benchmark, segments):
    model, batch = smollm2_shaped_model(), smollm2_batch(TOKENS)
    model.requires_grad_(False)             # EAP takes gradients of activations only
    with InstrumentedModel(model, "paper") as im:
        plain = _median_cpu_seconds(lambda: score_batch(im, batch))
        checked = _median_cpu_seconds(lambda: score_batch(im, batch, segments=segments))
        benchmark.pedantic(score_batch, args=(im, batch), kwargs={"segments": segments}, rounds=2, warmup_rounds=1)
    benchmark.extra_info.update({"plain_cpu_s": plain, "checkpointed_cpu_s": checked, "ratio": checked / plain,
                                 "segments": segments, "tokens": TOKENS})
    print(f"\ncheckpointed EAP ({segments} segments, {TOKENS} tokens): {checked:.2f} s CPU vs plain {plain:.2f} s "
          f"= {checked / plain:.2f}x")
