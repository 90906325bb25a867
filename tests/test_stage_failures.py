"""A stage that fails, fails once: a post model whose weights are damaged is loaded once in the
session (not once per cell), every cell of its pair is an INVALID row with that one reason, the
audit exits 1, and the reason is the last line on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_pairs
import torch

from harness.audit.config import AuditConfig
from harness.audit.stages import AuditPipeline
from harness.cli import main
from harness.data.selection import TOKEN_MODES
from harness.errors import UserError
from harness.models import pairs as pair_loading


def damaged_registry(folder: Path) -> Path:
    """The tiny pairs' registry with tiny-rl's post model replaced by one whose weights are cut in half."""
    tiny_pairs.write_registry(folder / "pairs.toml")
    tiny_pairs.write_dataset(folder / "sums.jsonl")
    post = folder / "tiny-rl-post"
    weights = post / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return folder / "pairs.toml"


def test_a_pair_that_fails_to_load_is_loaded_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    registry = damaged_registry(tmp_path)
    loads = []
    real = pair_loading.load_pair_models

    def counting(spec, **kwargs):
        loads.append(spec.name)
        return real(spec, **kwargs)

    monkeypatch.setattr("harness.audit.session.load_pair_models", counting)
    pipeline = AuditPipeline(AuditConfig(questions=20, grader="lenient"), registry, progress=False)
    dataset = str(tmp_path / "sums.jsonl")
    for alpha in (0.3, 0.6, 1.0):
        with pytest.raises(UserError, match="a weight file is not valid safetensors"):
            pipeline.cell("tiny-rl", dataset, alpha)
    assert loads == ["tiny-rl"]


def test_the_audit_reports_the_failed_stage_once_and_last(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    registry = damaged_registry(tmp_path)
    code = main(["audit", "--registry", str(registry), "--pairs", "tiny-rl", "--datasets", "sums.jsonl",
                 "--questions", "20", "--alphas", "0.3,1.0", "--set", "grader=lenient", "--no-progress",
                 "--threads", "1", "--run-id", "broken"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    document = json.loads((tmp_path / "reports" / "broken" / "claims.json").read_text())
    cells = document["cells"]
    assert code == 1 and cells and document["summary"]["cells"] == document["summary"]["selected"]
    assert {c["verdict"] for c in cells} == {"INVALID"}
    reasons = {c["extra"]["error"]["message"] for c in cells}
    assert len(reasons) == 1 and "tiny-rl-post: a weight file is not valid safetensors" in reasons.pop()
    assert err[-1].startswith(f"audit: {len(cells)} cell(s) failed with UserError: could not load model")


def test_one_resident_model_gives_the_same_cell(tmp_path: Path, monkeypatch) -> None:
    """On CUDA a session keeps one model loaded at a time (what the planner counts for a 7B pair);
    a cell computed that way, with a reload at every change of side, equals the both-resident one."""
    tiny_pairs.write_registry(tmp_path / "pairs.toml")
    tiny_pairs.write_dataset(tmp_path / "sums.jsonl")
    cells, sessions = {}, {}
    for resident in (2, 1):
        monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / f"cache-{resident}"))
        monkeypatch.setattr("harness.audit.session.resident_models", lambda device, r=resident: r)
        pipeline = AuditPipeline(AuditConfig(questions=20, grader="lenient"), tmp_path / "pairs.toml",
                                 progress=False)
        cells[resident] = pipeline.cell("tiny-rl", str(tmp_path / "sums.jsonl"), 0.6)
        sessions[resident] = pipeline.session
    assert len(sessions[1]._loaded) == 1 and len(sessions[2]._loaded) == 2
    loads = {r: s.ledger.as_dict().get("models:loaded") for r, s in sessions.items()}
    assert loads[2] == 1 and loads[1] >= 3          # base, post (answers), then back to base (EAP) at least
    for side in ("base", "post"):
        assert torch.equal(getattr(cells[1], side).scores, getattr(cells[2], side).scores)
    assert cells[1].fidelity == cells[2].fidelity


def test_preparing_a_pair_loads_each_model_once_whatever_the_number_of_cells(tmp_path: Path, monkeypatch) -> None:
    """With one resident model (CUDA), `prepare` runs every stage of one side before the other: the
    models load 4 times (answers base, post; then scores base, post) for one cell or one per token mode, where
    computing the cells one by one reloads at every cell. The cells are the same either way. (The
    tiny models' answers are 2 tokens, so every alpha has T_cut 1: the cells differ by token mode.)"""
    tiny_pairs.write_registry(tmp_path / "pairs.toml")
    tiny_pairs.write_dataset(tmp_path / "sums.jsonl")
    dataset = str(tmp_path / "sums.jsonl")
    monkeypatch.setattr("harness.audit.session.resident_models", lambda device: 1)
    loads, cells = {}, {}
    for how, modes in (("prepared", TOKEN_MODES[:1]), ("prepared", TOKEN_MODES), ("cell by cell", TOKEN_MODES)):
        monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / f"cache-{how}-{len(modes)}"))
        pipeline = AuditPipeline(AuditConfig(questions=20, grader="lenient", fidelity_edges=6), tmp_path / "pairs.toml",
                                 progress=False)
        if how == "prepared":
            pipeline.prepare("tiny-rl", [dataset], [(dataset, 0.5, m) for m in modes], causal=True)
        cells[how, len(modes)] = [pipeline.cell("tiny-rl", dataset, 0.5, m) for m in modes]
        for cell in cells[how, len(modes)]:
            pipeline.causal(cell, "post")
        loads[how, len(modes)] = pipeline.ledger.as_dict()["models:loaded"]
    many = len(TOKEN_MODES)
    assert loads["prepared", 1] == 4 and loads["prepared", many] == 4 and loads["cell by cell", many] > 4
    for prepared, by_cell in zip(cells["prepared", many], cells["cell by cell", many]):
        assert torch.equal(prepared.post.scores, by_cell.post.scores) and prepared.fidelity == by_cell.fidelity
