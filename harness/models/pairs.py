"""Loading a registry pair: its model references built where they are bundled or tiny, then base
and post-trained models loaded (a LoRA adapter merged into a second copy of the base)."""

from __future__ import annotations

from pathlib import Path

from harness.errors import UserError
from harness.files import read_json_file
from harness.models.bundled import BUNDLED_BASES, bundled_folder
from harness.models.loading import (
    TOKENIZER_FILES,
    LoadedModel,
    ModelInfo,
    checkpoint_mismatches,
    definition_fingerprint,
    load_model,
    mismatch_text,
    state_dict_fingerprint,
)
from harness.models.registry import PairSpec
from harness.models.tiny import tiny_model_folder


def build_reference(ref: str) -> str:
    """A model reference as something `load_model` accepts (a folder or a hub id); a bundled or tiny
    reference is built (converted or trained, then cached) when its folder is missing."""
    if ref.startswith("bundled:"):
        name = ref.split(":", 1)[1]
        if name not in BUNDLED_BASES:
            raise UserError(f"unknown bundled model {name!r}; bundled bases: {', '.join(BUNDLED_BASES)}")
        return str(bundled_folder(name))
    if ref.startswith("tiny:"):
        parts = ref.split(":")
        return str(tiny_model_folder(parts[1], post=len(parts) > 2 and parts[2] == "post"))
    return ref


def same_model(declared: str, base: str) -> bool:
    """Whether an adapter's declared base can be the pair's base: two local folders must be one folder,
    two bundled or tiny names one name; a hub id against a local folder (a downloaded copy) is not
    judged."""
    local = [Path(x).expanduser() for x in (declared, base)]
    if all(p.exists() for p in local):
        return local[0].resolve() == local[1].resolve()
    if declared.startswith(("bundled:", "tiny:")) or base.startswith(("bundled:", "tiny:")):
        return declared == base or not all(x.startswith(("bundled:", "tiny:")) for x in (declared, base))
    return True


def check_pair_files(spec: PairSpec) -> None:
    """UserError, before any work, when a local model folder or adapter of the pair is missing (hub
    ids, bundled and tiny references are built or fetched when loaded, so they are not checked)."""
    for side, ref in (("base", spec.base), ("post", spec.post)):
        if ref is None or ref.startswith(("bundled:", "tiny:")):
            continue
        looks_like_path = ref.startswith((".", "/", "~")) or ref.count("/") > 1 or ref.endswith(".gguf")
        if looks_like_path and not Path(ref).expanduser().exists():
            raise UserError(f"pair {spec.name}: the {side} model {ref} does not exist; fix the registry entry "
                            "or choose other --pairs")
        folder = Path(ref).expanduser()
        if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):   # finding u22
            raise UserError(f"pair {spec.name}: the {side} model folder {ref} has no tokenizer files "
                            f"({', '.join(TOKENIZER_FILES)}); save its tokenizer beside the weights")
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):   # damaged: refused up front (u23)
            if (folder / name).is_file():
                read_json_file(folder / name, f"pair {spec.name}: the {side} model's")
        if folder.is_dir():   # findings u26, u27: the loader would initialise these at random
            missing = checkpoint_mismatches(folder)
            if missing:
                raise UserError(f"pair {spec.name}: the {side} model {ref}: {mismatch_text(missing)}")
    for side, folder in (("post", spec.post_adapter), ("base", spec.base_adapter)):
        if folder is not None and not (Path(folder) / "adapter_config.json").is_file():
            raise UserError(f"pair {spec.name}: the {side} adapter folder {folder} has no adapter_config.json; "
                            "train it (see fixtures/smollm2/rebuild.sh) or choose other --pairs")
        if folder is not None:
            declared = read_json_file(Path(folder) / "adapter_config.json", "adapter config").get(
                "base_model_name_or_path")
            if declared and not same_model(declared, spec.base):   # finding u25: merged without a word
                raise UserError(f"pair {spec.name}: the {side} adapter {folder} was made for {declared}, not for the "
                                f"pair's base {spec.base}; give the adapter of this base")


def load_pair_models(spec: PairSpec, dtype: str = "float32", device: str = "cpu") -> tuple[LoadedModel, LoadedModel]:
    """Load base and post-trained models; an adapter is merged into a fresh copy of the checkpoint.

    A merged model's fingerprint is `state_dict_fingerprint` of its weights.
    """
    return load_pair_side(spec, "base", dtype, device), load_pair_side(spec, "post", dtype, device)


def load_pair_side(spec: PairSpec, side: str, dtype: str = "float32", device: str = "cpu") -> LoadedModel:
    """One model of a pair: side `base` or `post`."""
    base_path = build_reference(spec.base)
    if side == "base":
        if spec.base_adapter is not None:
            return merged_adapter_model(spec.name, base_path, Path(spec.base_adapter), dtype, device)
        return load_model(base_path, dtype=dtype, device=device, revision=spec.base_revision)
    if spec.post is not None:
        return load_model(build_reference(spec.post), dtype=dtype, device=device, revision=spec.post_revision)
    return merged_adapter_model(spec.name, base_path, Path(spec.post_adapter), dtype, device)


def merged_adapter_model(pair: str, base_path: str, adapter: Path, dtype: str, device: str) -> LoadedModel:
    """The checkpoint at `base_path` with a LoRA adapter merged (in float32, then cast to `dtype`)."""
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"pair {pair}: adapter folder {adapter} has no adapter_config.json")
    import torch
    from peft import PeftModel

    fresh = load_model(base_path, dtype="float32", device="cpu")
    try:
        merged = PeftModel.from_pretrained(fresh.model, adapter).merge_and_unload()
    except RuntimeError as err:   # the first size mismatch, not only its heading line (finding u24)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = next((line for line in lines if "size mismatch" in line), lines[0] if lines else type(err).__name__)
        raise UserError(f"pair {pair}: the adapter {adapter} does not fit the base {base_path}: {detail}") from None
    merged = merged.to(dtype=getattr(torch, dtype), device=device).eval()
    merged.requires_grad_(False)
    info = ModelInfo(source=f"{base_path}+{adapter}", fingerprint=state_dict_fingerprint(merged),
                     model_class=type(merged).__name__, dtype=dtype, device=str(next(merged.parameters()).device),
                     definition=f"{fresh.info.definition}+{definition_fingerprint(adapter)}",
                     parameters=sum(p.numel() for p in merged.parameters()))
    return LoadedModel(model=merged, tokenizer=fresh.tokenizer, info=info)
