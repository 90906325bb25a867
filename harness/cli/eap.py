"""`python -m harness eap`: score every edge of a model on a JSONL file of token sequences."""

from __future__ import annotations

import json
from pathlib import Path

from harness.circuit.eap import Positions, Sample, run_eap
from harness.errors import UserError
from harness.circuit.graph import Layout
from harness.versions import library_versions


def read_samples(path: Path) -> list[Sample]:
    """Rows `{"id": str, "prompt_ids": [int], "target_ids": [int]}`, one per line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input file {path} does not exist")
    samples = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{line_no}: expected an object with id, prompt_ids, target_ids")
        missing = [k for k in ("id", "prompt_ids", "target_ids") if k not in row]
        if missing:
            raise UserError(f"{path}:{line_no}: missing field(s) {', '.join(missing)}; each row needs "
                            '{"id": str, "prompt_ids": [int], "target_ids": [int]}')
        for key in ("prompt_ids", "target_ids"):
            ids = row[key]
            if not isinstance(ids, list) or not all(isinstance(t, int) and t >= 0 for t in ids):
                raise UserError(f"{path}:{line_no}: {key} must be a list of non-negative token ids")
        samples.append(Sample.from_row(row))
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"{path}: id {dup!r} appears more than once; ids must be unique")
    return samples


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
    p = subparsers.add_parser("eap", help="edge attribution patching scores for a model")
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
