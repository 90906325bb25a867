"""`python -m harness ablate` (exact edge deltas) and `python -m harness fidelity` (EAP vs exact)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.circuit.ablation import (
    DEFAULT_CHUNK,
    DEFAULT_LOGIT_CHUNK,
    AblationKind,
    AblationResult,
    MeanOver,
    ablate_edges,
)
from harness.circuit.batches import read_samples
from harness.circuit.eap import SIGN_CONVENTION, EdgeScores
from harness.circuit.fidelity import (
    DEFAULT_THRESHOLD,
    SAMPLINGS,
    EdgeSample,
    fidelity_points,
    measure_fidelity,
    sample_edges,
    with_sample,
)
from harness.circuit.graph import Layout, build_graph
from harness.circuit.intervention import family_of
from harness.cli import COMMANDS, real_number, whole_number
from harness.errors import UserError
from harness.files import atomic_write_bytes, atomic_write_json, check_writable_folder, read_json_file
from harness.report.plots import fidelity_scatter
from harness.versions import library_versions


def scatter_png(eap: EdgeScores, ablation: AblationResult, path: Path, title: str = "") -> None:
    png = fidelity_scatter({"edges": fidelity_points(eap, ablation)}, title or "EAP vs exact edge ablation")
    atomic_write_bytes(Path(path), png)


def sample_size(spec: str) -> int:
    """N of `--edges sample:N` (a whole number >= 1), checked before any model loads."""
    try:
        n = int(spec.split(":", 1)[1])
    except ValueError:
        raise UserError(f"--edges {spec!r}: write sample:N with a whole number N") from None
    if n < 1:
        raise UserError(f"--edges {spec!r}: sample at least one edge (sample:N with N >= 1)")
    return n


def parse_edges(spec: str, graph, eap_dir: Path | None, seed: int, sampling: str = "uniform") -> EdgeSample:
    """`all`, `sample:N` (uniform random by default; `sampling="stratified"` stratifies by mean
    |EAP| from --eap and weights each edge by its inverse inclusion probability), or a JSON file
    holding [[source, destination], ...] by name or index."""
    if spec == "all":
        real = [tuple(e) for e in graph.mask().nonzero().tolist()]
        return EdgeSample(real, [1.0] * len(real), [0] * len(real), "all", len(real))
    if spec.startswith("sample:"):
        n = sample_size(spec)
        if sampling == "stratified" and eap_dir is None:
            raise UserError("--sampling stratified needs --eap (the scores to stratify by)")
        scored = EdgeScores.load(eap_dir) if eap_dir else None
        if scored is not None and scored.graph.layout != graph.layout:   # finding a02
            raise UserError(f"--eap {eap_dir} scored the {scored.graph.layout.value} layout, but this ablation "
                            f"runs the {graph.layout.value} layout; give --layout {scored.graph.layout.value} or "
                            "scores of this layout")
        importance = scored.scores.abs().mean(0) if scored is not None else None
        return sample_edges(graph, n, seed, sampling=sampling, importance=importance, all_below=0)
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"--edges {spec!r}: use all, sample:N, or a JSON file of [source, destination] pairs")
    try:
        pairs = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({getattr(err, 'msg', err.reason)})") from None
    if not isinstance(pairs, list) or not pairs:
        raise UserError(f"{path}: expected a non-empty JSON list of [source, destination] pairs")
    edges = []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2
                and all(isinstance(x, str) or (isinstance(x, int) and not isinstance(x, bool)) for x in pair)):
            raise UserError(f"{path}: each edge must be a [source, destination] pair of names or indices, got {pair!r}")
        u, v = pair
        edge = (graph.source_index(u) if isinstance(u, str) else u, graph.destination_index(v) if isinstance(v, str) else v)
        if edge in edges:   # by name and by index alike: it would count twice in any fidelity on it (a03)
            raise UserError(f"{path}: edge {pair!r} is given twice (as {list(edge)}); give each edge once")
        edges.append(edge)
    return EdgeSample(edges, [1.0] * len(edges), [0] * len(edges), "given", graph.n_edges)


def save_ablation(result: AblationResult, graph, out: Path, meta: dict) -> None:
    from safetensors.torch import save as save_bytes

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "ablation.safetensors", save_bytes(
        {"delta": result.delta.contiguous(), "clean_loss": result.clean_loss.contiguous()}))
    atomic_write_json(out / "ablation.json", {
        "sources": list(graph.sources), "destinations": graph.destination_names, "ids": result.ids,
        "layout": graph.layout.value, "n_layers": graph.n_layers, "kind": result.kind.value,
        "edges": [list(e) for e in result.edges], "sign": SIGN_CONVENTION, "positions": result.positions,
        "ablation_dtype": result.dtype, "control": result.control, "sampling": result.sampling,
        "edge_weights": result.edge_weights, "edge_strata": result.edge_strata, **meta})


def load_ablation(out: Path) -> tuple[AblationResult, dict]:
    from safetensors.torch import load_file

    for name in ("ablation.safetensors", "ablation.json"):
        if not (Path(out) / name).is_file():
            raise UserError(f"{Path(out) / name} is missing; run `python -m harness ablate` first")
    tensors = load_file(Path(out) / "ablation.safetensors")
    meta = read_json_file(Path(out) / "ablation.json", "ablation record", ("ids", "kind", "edges"))   # f05
    result = AblationResult(tensors["delta"], tensors["clean_loss"], meta["ids"],
                            AblationKind(meta["kind"]), [tuple(e) for e in meta["edges"]],
                            positions=meta.get("positions", "all"), dtype=meta.get("ablation_dtype", ""),
                            control=meta.get("control", False), sampling=meta.get("sampling", "given"),
                            edge_weights=meta.get("edge_weights"), edge_strata=meta.get("edge_strata"))
    return result, meta


def run_ablate(args) -> int:
    from harness.models.loading import load_model, scoring_pad_id

    if args.corrupted is not None and args.kind != "patch":   # it would be ignored without a word (a04)
        raise UserError(f"--corrupted applies to --kind patch; --kind {args.kind} ablates without corrupted inputs")
    if args.edges.startswith("sample:"):
        sample_size(args.edges)            # a bad edge sample fails before the model loads
    check_writable_folder(args.out)
    samples = read_samples(args.input)
    corrupted = read_samples(args.corrupted) if args.corrupted else None
    loaded = load_model(args.model, gguf_file=args.gguf_file, dtype=args.dtype, device=args.device,
                        require_tokenizer=False, revision=args.revision)
    family = family_of(loaded.model)
    graph = build_graph(getattr(loaded.model.config, family.config_layers), args.layout)
    chosen = parse_edges(args.edges, graph, args.eap, args.seed, args.sampling)
    edges = chosen.edges
    pad_id = scoring_pad_id(loaded.tokenizer)
    result = ablate_edges(loaded.model, samples, edges, layout=args.layout, kind=args.kind,
                          corrupted=corrupted, mean_over=args.mean_over, pad_id=pad_id,
                          positions=args.positions, upcast=not args.no_upcast, chunk=args.chunk,
                          logit_chunk=args.logit_chunk)
    result = with_sample(result, chosen)
    info = loaded.info
    save_ablation(result, graph, args.out, {
        "model": {"source": info.source, "fingerprint": info.fingerprint, "class": info.model_class,
                  "dtype": info.dtype, "device": info.device},
        "versions": library_versions(), "input": str(args.input), "seed": args.seed,
        "mean_over": args.mean_over if args.kind == "mean" else None})
    print(f"ablated {len(edges)} edges ({result.sampling}) × {len(samples)} samples ({args.kind}, positions "
          f"{result.positions}, {result.dtype}) → {args.out}/ablation.safetensors")
    return 0


def format_record(record: dict) -> list[str]:
    """The fidelity record as lines: status and interval first, then per destination, then the rest."""
    lo, hi = record["ci"]
    lines = [f"status      {record['status']}  ({record['reason']})",
             f"spearman    {record['spearman']:.4f}  {record['ci_level']:.0%} CI [{lo:.4f}, {hi:.4f}]  "
             f"({record['bootstrap']} bootstrap, {record['n_boot']} replicates"
             f"{', weighted' if record['weighted'] else ''})",
             f"cells       {record['n_questions']} questions x {record['n_edges']} edges ({record['sampling']}), "
             f"positions {record['positions']}, {record['ablation']} ablation in {record['ablation_dtype'] or '?'}",
             "threshold   " + "  ".join(f"{t}: {s}" + (" (default)" if float(t) == record["threshold"] else "")
                                      for t, s in record["band"].items()),
             "by destination"]
    for kind, row in record["by_destination"].items():
        lines.append(f"  {kind:<6} {row['spearman']:.4f}  ({row['n_cells']} cells)")
    for key in ("pearson", "sign_agreement", "topk_recall", "top_k", "relative_error"):
        value = record[key]
        lines.append(f"{key:<15} {value:.4f}" if isinstance(value, float) else f"{key:<15} {value}")
    return lines


def run_fidelity(args) -> int:
    out = check_writable_folder(args.out or Path(args.ablation), "--out" if args.out else "--ablation")
    eap = EdgeScores.load(args.eap)
    ablation, meta = load_ablation(args.ablation)
    scored, ablated = (eap.meta.get("model") or {}).get("fingerprint"), (meta.get("model") or {}).get("fingerprint")
    if scored and ablated and scored != ablated:   # one model's scores against another's ablation (f01)
        raise UserError(f"--eap {args.eap} scored the model {eap.meta['model'].get('source')} (fingerprint "
                        f"{scored[:12]}) but --ablation {args.ablation} ablated {meta['model'].get('source')} "
                        f"(fingerprint {ablated[:12]}); compare one model's scores with its own ablation")
    fidelity = measure_fidelity(eap, ablation, args.top_k, threshold=args.threshold, n_boot=args.n_boot,
                                level=args.level, seed=args.seed)
    record = fidelity.as_dict()
    atomic_write_json(out / "fidelity.json", {**record, "eap": str(args.eap), "ablation_dir": str(args.ablation)})
    scatter_png(eap, ablation, out / "fidelity.png")
    print("\n".join(format_record(record)))
    print(f"→ {out}/fidelity.json, {out}/fidelity.png")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("ablate", help=COMMANDS["ablate"][1])
    p.add_argument("--model", required=True, help="local folder, .gguf file, or hub id")
    p.add_argument("--gguf-file", default=None)
    p.add_argument("--revision", default=None,
                   help="hub branch, tag or commit of --model (hub ids only; recorded in the fingerprint)")
    p.add_argument("--input", required=True, type=Path, help="JSONL rows: id, prompt_ids, target_ids")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--edges", default="sample:64", help="all | sample:N | FILE.json")
    p.add_argument("--eap", type=Path, default=None, help="EAP output folder, for --sampling stratified")
    p.add_argument("--sampling", default="uniform", choices=list(SAMPLINGS),
                   help="sample:N uniformly (default) or stratified by mean |EAP| with inverse-inclusion weights")
    p.add_argument("--positions", default="all", choices=["all", "targets"],
                   help="remove each edge at every position, or only at target positions (match the EAP run)")
    p.add_argument("--no-upcast", action="store_true",
                   help="ablate a bfloat16/float16 model in its own dtype instead of float32 (a layer at a time)")
    p.add_argument("--chunk", type=whole_number("--chunk"), default=DEFAULT_CHUNK,
                   help=f"edge variants stacked in one restarted run (default {DEFAULT_CHUNK}; memory grows with it)")
    p.add_argument("--logit-chunk", type=whole_number("--logit-chunk"), default=DEFAULT_LOGIT_CHUNK,
                   help=f"target positions whose logits exist at once (default {DEFAULT_LOGIT_CHUNK}; "
                        "the loss is the same at any)")
    p.add_argument("--kind", default="zero", choices=[k.value for k in AblationKind])
    p.add_argument("--mean-over", default="positions", choices=[k.value for k in MeanOver])
    p.add_argument("--corrupted", type=Path, default=None, help="JSONL of corrupted inputs for --kind patch")
    p.add_argument("--layout", default="paper", choices=[x.value for x in Layout])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=whole_number("--seed", minimum=0), default=0)
    p.set_defaults(run=run_ablate)

    f = subparsers.add_parser("fidelity", help=COMMANDS["fidelity"][1])
    f.add_argument("--eap", required=True, type=Path, help="folder written by `eap`")
    f.add_argument("--ablation", required=True, type=Path, help="folder written by `ablate`")
    f.add_argument("--out", type=Path, default=None, help="where to write (default: the ablation folder)")
    f.add_argument("--top-k", type=whole_number("--top-k"), default=None,
                   help="edges in the top-k recall (default: a tenth of the ablated edges)")
    f.add_argument("--threshold", type=real_number("--threshold", -1, 1), default=DEFAULT_THRESHOLD,
                   help="Spearman threshold of the status (a convention; the 0.3/0.5/0.7 band is printed too)")
    f.add_argument("--n-boot", type=whole_number("--n-boot"), default=1000, help="bootstrap replicates")
    f.add_argument("--level", type=real_number("--level", 0.5, 1, open_high=True), default=0.95,   # f04
                   help="interval level")
    f.add_argument("--seed", type=whole_number("--seed", minimum=0), default=0, help="bootstrap seed")
    f.set_defaults(run=run_fidelity)

