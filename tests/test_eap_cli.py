"""`python -m harness eap`: output files, provenance, and one clear message per bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from model_factories import tiny_model
from safetensors.torch import load_file

from harness.circuit.eap import EdgeScores
from harness.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama", dtype=torch.float32).save_pretrained(folder)
    return folder


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [{"id": "q1", "prompt_ids": [1, 2, 3, 4], "target_ids": [5, 6, 7]},
        {"id": "q2", "prompt_ids": [8, 9], "target_ids": [10, 11, 12, 13]}]


def test_eap_command_writes_scores_and_provenance(model_dir, tmp_path):
    data = write_rows(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out"
    assert main(["eap", "--model", str(model_dir), "--input", str(data), "--out", str(out),
                 "--batch-size", "2"]) == 0
    tensors = load_file(out / "edges.safetensors")
    assert tensors["scores"].dtype == torch.float32 and tensors["scores"].shape == (2, 5, 9)
    assert tensors["mask"].dtype == torch.bool and int(tensors["mask"].sum()) == 4 * 4 + 6 + 1
    meta = json.loads((out / "edges.json").read_text())
    assert meta["ids"] == ["q1", "q2"] and meta["layout"] == "paper" and meta["positions"] == "all"
    assert meta["sources"][:3] == ["embed", "attn.0", "mlp.0"]
    assert meta["destinations"][:4] == ["attn.0.q", "attn.0.k", "attn.0.v", "mlp.0"]
    assert meta["model"]["fingerprint"].startswith("sha256:") and meta["model"]["class"] == "LlamaForCausalLM"
    assert "L(edge removed) - L(clean)" in meta["sign"] and "torch" in meta["versions"]
    loaded = EdgeScores.load(out)
    assert torch.equal(loaded.scores, tensors["scores"]) and loaded.ids == ["q1", "q2"]


@pytest.mark.parametrize("rows, message", [
    (["{not json"], "in.jsonl:1: not valid JSON"),
    ([{"id": "a", "prompt_ids": [1]}], "in.jsonl:1: missing field(s) target_ids"),
    ([{"id": "a", "prompt_ids": [1], "target_ids": []}], "sample 'a': target_ids is empty"),
    ([{"id": "a", "prompt_ids": [1], "target_ids": ["x"]}], "target_ids must be a list of non-negative"),
    ([{"id": "a", "prompt_ids": [1] * 300, "target_ids": [2]}], "longer than the model's context of 128"),
    ([{"id": "a", "prompt_ids": [1], "target_ids": [9999]}], "≥ the vocabulary size 64"),
    ([{"id": "a", "prompt_ids": [1], "target_ids": [2]}] * 2, "id 'a' appears more than once"),
])
def test_bad_input_exits_2_with_one_message(model_dir, tmp_path, capsys, rows, message):
    path = tmp_path / "in.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    assert main(["eap", "--model", str(model_dir), "--input", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_missing_model_and_unsupported_architecture(tmp_path, capsys):
    from transformers import OPTConfig, OPTForCausalLM

    data = write_rows(tmp_path / "in.jsonl", ROWS)
    assert main(["eap", "--model", str(tmp_path / "nowhere"), "--input", str(data),
                 "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    opt = tmp_path / "opt"
    OPTForCausalLM(OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=16,
                             num_attention_heads=2, word_embed_proj_dim=16)).save_pretrained(opt)
    assert main(["eap", "--model", str(opt), "--input", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "unsupported architecture OPTForCausalLM" in capsys.readouterr().err


def test_module_entry_point_reports_user_errors_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "harness", "eap", "--model", "m", "--input",
                           str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "input file" in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_ablate_and_fidelity_commands(model_dir, tmp_path, capsys):
    data = write_rows(tmp_path / "in.jsonl", ROWS)
    eap_dir, abl_dir = tmp_path / "eap", tmp_path / "abl"
    assert main(["eap", "--model", str(model_dir), "--input", str(data), "--out", str(eap_dir)]) == 0
    assert main(["ablate", "--model", str(model_dir), "--input", str(data), "--out", str(abl_dir),
                 "--edges", "sample:8", "--eap", str(eap_dir)]) == 0
    delta = load_file(abl_dir / "ablation.safetensors")["delta"]
    assert delta.shape == (2, 5, 9) and int(torch.isfinite(delta[0]).sum()) == 8
    meta = json.loads((abl_dir / "ablation.json").read_text())
    assert meta["kind"] == "zero" and len(meta["edges"]) == 8
    assert main(["fidelity", "--eap", str(eap_dir), "--ablation", str(abl_dir)]) == 0
    printed = capsys.readouterr().out
    assert "spearman" in printed and "status" in printed and "by destination" in printed
    assert (abl_dir / "fidelity.png").stat().st_size > 1000
    fidelity = json.loads((abl_dir / "fidelity.json").read_text())
    assert fidelity["n_edges"] == 8 and fidelity["n_questions"] == 2 and -1 <= fidelity["spearman"] <= 1
    assert fidelity["sampling"] == "uniform" and fidelity["status"] in ("FAITHFUL", "UNFAITHFUL", "UNCERTAIN")
    assert len(fidelity["ci"]) == 2 and set(fidelity["band"]) == {"0.3", "0.5", "0.7"}
    # EAP at target positions needs ablation at target positions; a mismatch is refused
    t_eap, t_abl = tmp_path / "eap_t", tmp_path / "abl_t"
    assert main(["eap", "--model", str(model_dir), "--input", str(data), "--out", str(t_eap),
                 "--positions", "targets"]) == 0
    assert main(["fidelity", "--eap", str(t_eap), "--ablation", str(abl_dir)]) == 2
    assert "rerun `ablate --positions targets`" in capsys.readouterr().err
    assert main(["ablate", "--model", str(model_dir), "--input", str(data), "--out", str(t_abl),
                 "--edges", "sample:8", "--positions", "targets"]) == 0
    assert main(["fidelity", "--eap", str(t_eap), "--ablation", str(t_abl), "--n-boot", "100"]) == 0
    assert json.loads((t_abl / "fidelity.json").read_text())["positions"] == "targets"
    edges_file = tmp_path / "edges.json"
    edges_file.write_text(json.dumps([["embed", "sink"], ["mlp.0", "attn.1.q"]]))
    assert main(["ablate", "--model", str(model_dir), "--input", str(data), "--out", str(tmp_path / "a2"),
                 "--edges", str(edges_file), "--kind", "mean"]) == 0
    edges_file.write_text(json.dumps([["mlp.1", "attn.0.q"]]))
    assert main(["ablate", "--model", str(model_dir), "--input", str(data), "--out", str(tmp_path / "a3"),
                 "--edges", str(edges_file)]) == 2
    assert "is not an edge of the paper graph" in capsys.readouterr().err


def test_hub_ids_fail_clearly_when_the_hub_is_unreachable(monkeypatch):
    from harness.errors import UserError
    from harness.models.loading import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="could not load model no-such-org/no-such-model as a hub id"):
        load_model("no-such-org/no-such-model")
    with pytest.raises(UserError, match="this machine has no CUDA GPU"):
        load_model("no-such-org/no-such-model", device="cuda")
