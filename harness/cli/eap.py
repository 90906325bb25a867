"""`python -m harness eap`: score every edge of a model on a JSONL file of token sequences."""

from __future__ import annotations

from pathlib import Path

from harness.circuit.batches import Positions, read_samples
from harness.circuit.eap import run_eap
from harness.circuit.graph import Layout
from harness.cli import COMMANDS
from harness.errors import UserError
from harness.versions import library_versions


def run(args) -> int:
    from harness.models.loading import load_model, scoring_pad_id

    samples = read_samples(args.input)   # read first: a bad file fails before a model loads
    loaded = load_model(args.model, gguf_file=args.gguf_file, dtype=args.dtype, device=args.device,
                        require_tokenizer=False)
    vocab = loaded.model.config.vocab_size
    too_big = [s.id for s in samples if max(s.prompt_ids + s.target_ids) >= vocab]
    if too_big:
        raise UserError(f"sample {too_big[0]!r} has token ids ≥ the vocabulary size {vocab}; "
                        "were the ids made with this model's tokenizer?")
    pad_id = scoring_pad_id(loaded.tokenizer)
    result = run_eap(loaded.model, samples, layout=args.layout, positions=args.positions,
                     batch_size=args.batch_size, pad_id=pad_id)
    info = loaded.info
    result.meta = {"model": {"source": info.source, "fingerprint": info.fingerprint,
                             "class": info.model_class, "dtype": info.dtype, "device": info.device},
                   "versions": library_versions(), "input": str(args.input)}
    result.save(args.out)
    print(f"scored {len(samples)} samples × {result.graph.n_edges} edges → {args.out}/edges.safetensors")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("eap", help=COMMANDS["eap"][1])
    p.add_argument("--model", required=True, help="local folder, .gguf file, or hub id")
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside --model's folder")
    p.add_argument("--input", required=True, type=Path, help="JSONL rows: id, prompt_ids, target_ids")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--layout", default="paper", choices=[x.value for x in Layout])
    p.add_argument("--positions", default="all", choices=[x.value for x in Positions])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=1)
    p.set_defaults(run=run)
