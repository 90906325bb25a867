"""EAP cost relative to a plain training forward+backward (SmolLM2-135M shape, 256 tokens, CPU).

Measured, never asserted: run `make bench`; the ratios land in the benchmark's extra_info and are
printed. Target ≤ 1.3× time and ≤ 1.3× peak extra memory.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from overhead_probe import (
    eap_step,
    frozen_step,
    smollm2_batch,
    smollm2_shaped_model,
    train_step,
)

from harness.circuit.intervention import InstrumentedModel

TOKENS = 256
PROBE = Path(__file__).with_name("overhead_probe.py")


def _median_seconds(fn, repeats: int = 3) -> tuple[float, float]:
    """Median (wall seconds, process CPU seconds) over repeats after one warm-up call. CPU time
    is the fairer number on a shared machine."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return sorted(wall)[len(wall) // 2], sorted(cpu)[len(cpu) // 2]


def _peak_extra_mib(mode: str) -> float:
    done = subprocess.run([sys.executable, str(PROBE), mode, str(TOKENS)], capture_output=True,
                          text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_eap_overhead_vs_training_step(benchmark):
    model, batch = smollm2_shaped_model(), smollm2_batch(TOKENS)
    model.requires_grad_(True)
    train_wall, train_cpu = _median_seconds(lambda: train_step(model, batch))
    model.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    frozen_wall, frozen_cpu = _median_seconds(lambda: frozen_step(model, batch))
    with InstrumentedModel(model, "paper") as im:
        eap_wall, eap_cpu = _median_seconds(lambda: eap_step(im, batch))
        benchmark.pedantic(eap_step, args=(im, batch), rounds=3, warmup_rounds=1)
    eap_mib, train_mib, frozen_mib = (_peak_extra_mib(m) for m in ("eap", "train", "frozen"))
    benchmark.extra_info.update(
        train_wall_s=train_wall, train_cpu_s=train_cpu, eap_wall_s=eap_wall, eap_cpu_s=eap_cpu,
        frozen_wall_s=frozen_wall, frozen_cpu_s=frozen_cpu,
        wall_ratio=eap_wall / train_wall, cpu_ratio=eap_cpu / train_cpu,
        cpu_ratio_vs_frozen=eap_cpu / frozen_cpu, memory_ratio_vs_frozen=eap_mib / frozen_mib,
        eap_peak_extra_mib=eap_mib, train_peak_extra_mib=train_mib, frozen_peak_extra_mib=frozen_mib,
        memory_ratio=eap_mib / train_mib, threads=torch.get_num_threads())
    print(f"\nEAP {eap_wall:.2f} s wall / {eap_cpu:.2f} s CPU vs training fwd+bwd {train_wall:.2f} s / "
          f"{train_cpu:.2f} s (ratios {eap_wall / train_wall:.2f} wall, {eap_cpu / train_cpu:.2f} CPU); "
          f"peak extra memory {eap_mib:.0f} MiB vs {train_mib:.0f} MiB (ratio {eap_mib / train_mib:.2f}); "
          f"{torch.get_num_threads()} threads\nvs a frozen-weight fwd+bwd ({frozen_wall:.2f} s / "
          f"{frozen_cpu:.2f} s CPU, {frozen_mib:.0f} MiB): CPU ratio {eap_cpu / frozen_cpu:.2f}, "
          f"memory ratio {eap_mib / frozen_mib:.2f}")
    assert eap_cpu > 0 and train_mib > 0
