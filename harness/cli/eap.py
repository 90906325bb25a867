"""`python -m harness eap`: score every edge of a model on a JSONL file of token sequences."""

from __future__ import annotations

from pathlib import Path

from harness.circuit.batches import Positions, read_samples
from harness.circuit.eap import METHODS, check_method, run_eap
from harness.circuit.graph import Layout
from harness.cli import COMMANDS, whole_number
from harness.errors import UserError
from harness.files import check_writable_folder
from harness.versions import library_versions


def run(args) -> int:
    from harness.models.loading import load_model, scoring_pad_id

    steps = _steps(args.steps)
    check_writable_folder(args.out)
    check_method(args.method, steps)      # bad options and a bad file fail before a model loads
    if args.method == "lookahead" and args.positions != "all":
        raise UserError("method lookahead removes an edge at every position; use --positions all")
    samples = read_samples(args.input)
    loaded = load_model(args.model, gguf_file=args.gguf_file, dtype=args.dtype, device=args.device,
                        require_tokenizer=False, revision=args.revision)
    vocab = loaded.model.config.vocab_size
    too_big = [s.id for s in samples if max(s.prompt_ids + s.target_ids) >= vocab]
    if too_big:
        raise UserError(f"sample {too_big[0]!r} has token ids ≥ the vocabulary size {vocab}; "
                        "were the ids made with this model's tokenizer?")
    pad_id = scoring_pad_id(loaded.tokenizer)
    result = run_eap(loaded.model, samples, layout=args.layout, positions=args.positions,
                     batch_size=args.batch_size, pad_id=pad_id, method=args.method, steps=steps)
    info = loaded.info
    result.meta |= {"model": {"source": info.source, "fingerprint": info.fingerprint,
                              "class": info.model_class, "dtype": info.dtype, "device": info.device},
                    "versions": library_versions(), "input": str(args.input)}
    result.save(args.out)
    print(f"scored ({args.method}) {len(samples)} samples × {result.graph.n_edges} edges → {args.out}/edges.safetensors")
    return 0


def _steps(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--steps must be a whole number, got {text!r}") from None


def register(subparsers) -> None:
    p = subparsers.add_parser("eap", help=COMMANDS["eap"][1])
    p.add_argument("--model", required=True, help="local folder, .gguf file, or hub id")
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside --model's folder")
    p.add_argument("--revision", default=None,
                   help="hub branch, tag or commit of --model (hub ids only; recorded in the fingerprint)")
    p.add_argument("--input", required=True, type=Path, help="JSONL rows: id, prompt_ids, target_ids")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--layout", default="paper", choices=[x.value for x in Layout])
    p.add_argument("--positions", default="all", choices=[x.value for x in Positions])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=whole_number("--batch-size"), default=1)
    p.add_argument("--method", default="eap", help=f"attribution estimator: {' or '.join(METHODS)} "
                   "(lookahead: each edge removed exactly, STEPS layers recomputed, the rest linearised)")
    p.add_argument("--steps", default=None, help="lookahead only: layers recomputed exactly "
                   "(0 = EAP; default 1)")
    p.set_defaults(run=run)
