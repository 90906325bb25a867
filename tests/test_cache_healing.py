"""A corrupt cache heals: after a full audit of the tiny pairs, entries of every stage are truncated,
byte-flipped or stripped of a file; the rerun moves each aside, recomputes it, says so in the
report's cache ledger, and gives the same cells as the first run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_pairs
import torch
from test_suites_e2e import _run

pytest_plugins = ["pytester"]

JUDGED = ("verdict", "n", "p_value", "p_holm", "effect", "ci_low", "ci_high", "base_value", "post_value")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_a_digit(path: Path) -> None:
    """Change one digit of the file's last number-bearing line: it still parses, its content is wrong."""
    data = bytearray(path.read_bytes())
    at = max(i for i, b in enumerate(data) if chr(b).isdigit() and chr(b) != "7")
    data[at] = ord("7")
    path.write_bytes(bytes(data))


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x55
    path.write_bytes(bytes(data))


def damage_every_stage(cache: Path) -> dict[str, int]:
    """Damage entries of each stage in ways that once went unnoticed; how many per stage."""
    audit = cache / "audit"
    answers = sorted((audit / "answers").glob("*.json"))
    truncate(answers[0])
    flip_a_digit(answers[1])
    eap = sorted(p for p in (audit / "eap").iterdir() if p.is_dir())
    (eap[0] / "edges.json").unlink()            # once: "Directory not empty", never rewritten
    flip_a_byte(eap[1] / "edges.safetensors")   # once: changed numbers, no warning
    truncate(eap[2] / "edges.safetensors")
    damaged = {"answers": 2, "eap": 3}
    for stage in ("fidelity", "causal"):
        entries = sorted((audit / stage).glob("*.json"))
        truncate(entries[0])
        flip_a_digit(entries[1])
        damaged[stage] = 2
    generations = sorted((cache / "generations").glob("*.json"))
    for i, path in enumerate(generations):   # read again because both answers entries are recomputed
        (truncate if i % 2 else flip_a_digit)(path)
    damaged["generations"] = len(generations)
    return damaged


@pytest.mark.slow
def test_a_cache_damaged_in_every_stage_heals_to_the_same_report(pytester: pytest.Pytester, monkeypatch) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tiny_pairs.write_registry(pytester.path / "pairs.toml")
        tiny_pairs.write_dataset(pytester.path / "sums.jsonl")
        cache = pytester.path / "cache"
        monkeypatch.setenv("HARNESS_CACHE", str(cache))
        first = _run(pytester, "first")
        damaged = damage_every_stage(cache)
        second = _run(pytester, "second")
    finally:
        torch.set_num_threads(threads)

    before, after = (json.loads((pytester.path / "reports" / run / "claims.json").read_text())
                     for run in ("first", "second"))
    assert second.parseoutcomes() == first.parseoutcomes()
    cells = {c["cell_id"]: c for c in before["cells"]}
    assert sorted(cells) == sorted(c["cell_id"] for c in after["cells"])
    for c in after["cells"]:
        assert {k: c[k] for k in JUDGED} == {k: cells[c["cell_id"]][k] for k in JUDGED}, c["cell_id"]

    ledger = after["provenance"]["cache"]["ledger"]
    print(f"damaged entries per stage: {damaged}; healed: {ledger}")
    assert {stage: ledger.get(f"{stage}:healed", 0) for stage in damaged} == damaged
    healed = after["provenance"]["cache"]["healed"]
    assert len(healed) == sum(damaged.values())
    assert all(Path(h["moved_to"]).exists() and Path(h["moved_to"]).parent == cache / "quarantine" for h in healed)
    assert before["provenance"]["cache"]["healed"] == [] and "eap:healed" not in before["provenance"]["cache"]["ledger"]
    assert {"stage": "eap", "reason": "edges.json is missing"} in [
        {"stage": h["stage"], "reason": h["reason"]} for h in healed]
