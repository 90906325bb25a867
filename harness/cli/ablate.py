"""`python -m harness ablate` (exact edge deltas) and `python -m harness fidelity` (EAP vs exact)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.circuit.ablation import (
    AblationKind,
    AblationResult,
    MeanOver,
    ablate_edges,
)
from harness.circuit.batches import read_samples
from harness.circuit.eap import SIGN_CONVENTION, EdgeScores
from harness.circuit.fidelity import fidelity_points, measure_fidelity, sample_edges
from harness.circuit.graph import Layout, build_graph
from harness.circuit.intervention import family_of
from harness.cli import COMMANDS
from harness.errors import UserError
from harness.files import atomic_write_bytes, atomic_write_json
from harness.report.plots import fidelity_scatter
from harness.versions import library_versions


def scatter_png(eap: EdgeScores, ablation: AblationResult, path: Path, title: str = "") -> None:
    png = fidelity_scatter({"edges": fidelity_points(eap, ablation)}, title or "EAP vs exact edge ablation")
    atomic_write_bytes(Path(path), png)


def parse_edges(spec: str, graph, eap_dir: Path | None, seed: int) -> list[tuple[int, int]]:
    """`all`, `sample:N` (stratified by |EAP| when --eap is given, else uniform), or a JSON file
    holding [[source, destination], ...] by name or index."""
    if spec == "all":
        return [tuple(e) for e in graph.mask().nonzero().tolist()]
    if spec.startswith("sample:"):
        try:
            n = int(spec.split(":", 1)[1])
        except ValueError:
            raise UserError(f"--edges {spec!r}: write sample:N with a whole number N") from None
        importance = EdgeScores.load(eap_dir).scores.abs().mean(0) if eap_dir else None
        return sample_edges(graph, importance, n, seed, all_below=0)
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--edges {spec!r}: use all, sample:N, or a JSON file of [source, destination] pairs")
    try:
        pairs = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg})") from None
    edges = []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise UserError(f"{path}: each edge must be a [source, destination] pair, got {pair!r}")
        u, v = pair
        edges.append((graph.source_index(u) if isinstance(u, str) else int(u),
                      graph.destination_index(v) if isinstance(v, str) else int(v)))
    return edges


def save_ablation(result: AblationResult, graph, out: Path, meta: dict) -> None:
    from safetensors.torch import save as save_bytes

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "ablation.safetensors", save_bytes(
        {"delta": result.delta.contiguous(), "clean_loss": result.clean_loss.contiguous()}))
    atomic_write_json(out / "ablation.json", {
        "sources": list(graph.sources), "destinations": graph.destination_names, "ids": result.ids,
        "layout": graph.layout.value, "n_layers": graph.n_layers, "kind": result.kind.value,
        "edges": [list(e) for e in result.edges], "sign": SIGN_CONVENTION, **meta})


def load_ablation(out: Path) -> tuple[AblationResult, dict]:
    from safetensors.torch import load_file

    for name in ("ablation.safetensors", "ablation.json"):
        if not (Path(out) / name).is_file():
            raise UserError(f"{Path(out) / name} is missing; run `python -m harness ablate` first")
    tensors = load_file(Path(out) / "ablation.safetensors")
    meta = json.loads((Path(out) / "ablation.json").read_text())
    result = AblationResult(tensors["delta"], tensors["clean_loss"], meta["ids"],
                            AblationKind(meta["kind"]), [tuple(e) for e in meta["edges"]])
    return result, meta


def run_ablate(args) -> int:
    from harness.models.loading import load_model, scoring_pad_id

    samples = read_samples(args.input)
    corrupted = read_samples(args.corrupted) if args.corrupted else None
    loaded = load_model(args.model, gguf_file=args.gguf_file, dtype=args.dtype, device=args.device,
                        require_tokenizer=False)
    family = family_of(loaded.model)
    graph = build_graph(getattr(loaded.model.config, family.config_layers), args.layout)
    edges = parse_edges(args.edges, graph, args.eap, args.seed)
    pad_id = scoring_pad_id(loaded.tokenizer)
    result = ablate_edges(loaded.model, samples, edges, layout=args.layout, kind=args.kind,
                          corrupted=corrupted, mean_over=args.mean_over, pad_id=pad_id)
    info = loaded.info
    save_ablation(result, graph, args.out, {
        "model": {"source": info.source, "fingerprint": info.fingerprint, "class": info.model_class,
                  "dtype": info.dtype, "device": info.device},
        "versions": library_versions(), "input": str(args.input), "seed": args.seed,
        "mean_over": args.mean_over if args.kind == "mean" else None})
    print(f"ablated {len(edges)} edges × {len(samples)} samples ({args.kind}) → {args.out}/ablation.safetensors")
    return 0


def run_fidelity(args) -> int:
    eap = EdgeScores.load(args.eap)
    ablation, _ = load_ablation(args.ablation)
    fidelity = measure_fidelity(eap, ablation, args.top_k)
    out = args.out or Path(args.ablation)
    atomic_write_json(out / "fidelity.json", {**fidelity.as_dict(), "eap": str(args.eap),
                                              "ablation": str(args.ablation)})
    scatter_png(eap, ablation, out / "fidelity.png")
    width = max(len(k) for k in fidelity.as_dict())
    for key, value in fidelity.as_dict().items():
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    print(f"→ {out}/fidelity.json, {out}/fidelity.png")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("ablate", help=COMMANDS["ablate"][1])
    p.add_argument("--model", required=True, help="local folder, .gguf file, or hub id")
    p.add_argument("--gguf-file", default=None)
    p.add_argument("--input", required=True, type=Path, help="JSONL rows: id, prompt_ids, target_ids")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--edges", default="sample:64", help="all | sample:N | FILE.json")
    p.add_argument("--eap", type=Path, default=None, help="EAP output folder, to stratify sample:N by |score|")
    p.add_argument("--kind", default="zero", choices=[k.value for k in AblationKind])
    p.add_argument("--mean-over", default="positions", choices=[k.value for k in MeanOver])
    p.add_argument("--corrupted", type=Path, default=None, help="JSONL of corrupted inputs for --kind patch")
    p.add_argument("--layout", default="paper", choices=[x.value for x in Layout])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_ablate)

    f = subparsers.add_parser("fidelity", help=COMMANDS["fidelity"][1])
    f.add_argument("--eap", required=True, type=Path, help="folder written by `eap`")
    f.add_argument("--ablation", required=True, type=Path, help="folder written by `ablate`")
    f.add_argument("--out", type=Path, default=None, help="where to write (default: the ablation folder)")
    f.add_argument("--top-k", type=int, default=None)
    f.set_defaults(run=run_fidelity)

