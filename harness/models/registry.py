"""Registry of model pairs (base vs post-trained), read from `fixtures/pairs.toml`.

A model reference is one of:
- a hub id (`org/name`) or a local folder;
- `bundled:<name>`: a base shipped offline with the package (`harness.models.bundled`);
- `tiny:<family>` / `tiny:<family>:post`: the seconds-to-train test models of `harness.models.tiny`.
Reading the registry builds nothing; `harness.models.pairs.build_reference` builds a bundled or
tiny model when a stage needs its files.
A post-trained model is either such a reference (`post`) or the base plus a LoRA adapter folder
(`post_adapter`, relative to the registry file), merged on load. `base_adapter` does the same for the
base side: a seed control compares two post-trained runs of one checkpoint (base = checkpoint + run A's
adapter, post = checkpoint + run B's adapter), algorithm_kind `seed-control`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:   # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

from harness.circuit import FAMILIES
from harness.errors import UserError
from harness.files import read_utf8
from harness.models.prompts import TEMPLATES

DEFAULT_REGISTRY = Path(__file__).resolve().parents[2] / "fixtures" / "pairs.toml"
ALGORITHMS = ("sft", "grpo", "ppo", "dpo", "online-dpo", "rloo", "reward-weighted")
ONLINE_RL = "online-rl"
PREFERENCE_KINDS = ("offline-preference", "online-preference")
SUPERVISED = "supervised"
SEED_CONTROL = "seed-control"   # two runs of one algorithm that differ only in the seed
ALGORITHM_KINDS = (ONLINE_RL, *PREFERENCE_KINDS, SUPERVISED, SEED_CONTROL)
# keys of an `[architectures."<model reference>"]` table: the HF config fields the planner reads
ARCHITECTURE_KEYS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                     "num_key_value_heads", "vocab_size", "tie_word_embeddings", "max_position_embeddings",
                     "head_dim", "attention_bias")


@dataclass(frozen=True)
class PairSpec:
    """One base → post-trained pair and how to run it."""

    name: str
    family: str
    base: str
    algorithm: str
    algorithm_kind: str
    prompt_template: str
    max_new_tokens: int
    datasets: tuple[str, ...]
    post: str | None = None
    post_adapter: str | None = None          # absolute path once loaded
    base_adapter: str | None = None          # the base is `base` + this LoRA adapter (seed controls)
    bundled: bool = False                    # runs offline out of the box
    base_fingerprint: str | None = None      # expected, when known
    post_fingerprint: str | None = None      # expected (merged weights for adapters), when known
    adapter_fingerprint: str | None = None   # sha256 of the adapter files
    base_revision: str | None = None         # hub branch, tag or commit of `base` (hub ids only)
    post_revision: str | None = None         # the same for `post`
    notes: str = field(default="", compare=False)


def training_of(adapter: str | None) -> dict | None:
    """How a post-trained run was made, where the registry knows it: the `train_summary.json` that
    `python -m harness posttrain` writes beside the run's adapter folder ({method, lora_r, steps,
    learning_rate, algorithm, seed, tasks}); None for a hub model or an adapter without one."""
    if not adapter:
        return None
    summary = Path(adapter).parent / "train_summary.json"
    try:
        config = json.loads(summary.read_text()).get("config", {})
    except (OSError, ValueError):
        return None
    full = bool(config.get("full_weights"))
    return {"method": "full weights" if full else f"LoRA r={config.get('lora_r')}", "lora_r": None if full else
            config.get("lora_r"), "steps": config.get("steps"), "learning_rate": config.get("learning_rate"),
            "algorithm": config.get("algo"), "seed": config.get("seed"), "tasks": config.get("tasks")}


_REQUIRED = ("name", "family", "base", "algorithm", "algorithm_kind", "prompt_template", "max_new_tokens",
             "datasets")


def _parse_entry(raw: dict, index: int, where: Path) -> PairSpec:
    label = f"{where}: pair #{index + 1}" + (f" ({raw['name']!r})" if isinstance(raw.get("name"), str) else "")
    known = {f.name for f in fields(PairSpec)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(f"{label}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise UserError(f"{label}: missing required key(s) {', '.join(missing)}")
    texts = [k for k in ("name", "base", "post", "post_adapter", "base_adapter", "notes", "base_fingerprint",
                         "post_fingerprint", "adapter_fingerprint") if k in raw and not isinstance(raw[k], str)]
    if texts:   # findings u19, u28: an integer name or base crashed the grid
        raise UserError(f"{label}: {texts[0]} must be text (in quotes), got {raw[texts[0]]!r}")
    if isinstance(raw["max_new_tokens"], bool):   # TOML true is not a token budget (u18)
        raise UserError(f"{label}: max_new_tokens must be a positive integer, got {raw['max_new_tokens']!r}")
    for key, allowed in (("family", FAMILIES), ("algorithm", ALGORITHMS), ("algorithm_kind", ALGORITHM_KINDS),
                         ("prompt_template", tuple(TEMPLATES))):
        if raw[key] not in allowed:
            raise UserError(f"{label}: {key} = {raw[key]!r} is not one of {', '.join(allowed)}")
    if not isinstance(raw["max_new_tokens"], int) or raw["max_new_tokens"] < 1:
        raise UserError(f"{label}: max_new_tokens must be a positive integer, got {raw['max_new_tokens']!r}")
    if not isinstance(raw["datasets"], list) or not all(isinstance(d, str) for d in raw["datasets"]):
        raise UserError(f"{label}: datasets must be a list of dataset names")
    for key in ("base_revision", "post_revision"):
        if raw.get(key) is not None and (not isinstance(raw[key], str) or not raw[key].strip()):
            raise UserError(f"{label}: {key} must be a hub branch, tag or commit (text), got {raw[key]!r}")
    if raw.get("post_revision") is not None and raw.get("post") is None:
        raise UserError(f"{label}: post_revision pins `post`, a hub id; this pair has a post_adapter")
    if (raw.get("post") is None) == (raw.get("post_adapter") is None):
        raise UserError(f"{label}: give exactly one of `post` (model reference) or `post_adapter` (LoRA folder)")
    if (raw["algorithm_kind"] == SEED_CONTROL) != (raw.get("base_adapter") is not None):
        raise UserError(f"{label}: a seed-control pair needs `base_adapter` (run A) and `post_adapter` (run B), "
                        "and only a seed-control pair may have a base_adapter")
    entry = dict(raw, datasets=tuple(raw["datasets"]))
    for key in ("post_adapter", "base_adapter"):
        if raw.get(key):
            entry[key] = str((where.parent / raw[key]).resolve())
    return PairSpec(**entry)


def _read_toml(path: str | Path | None) -> tuple[Path, dict]:
    path = Path(path) if path else DEFAULT_REGISTRY
    if not path.is_file():
        raise UserError(f"pair registry {path} does not exist")
    try:
        return path, tomllib.loads(read_utf8(path, "pair registry"))
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path} is not valid TOML: {err}") from None


def load_architectures(path: str | Path | None = None) -> dict[str, dict]:
    """The registry's model shapes, `[architectures."<reference>"]` tables of ARCHITECTURE_KEYS (HF
    config names), by model reference: what `python -m harness plan` reads instead of a hub config."""
    path, data = _read_toml(path)
    tables = data.get("architectures", {})
    if not isinstance(tables, dict) or not all(isinstance(v, dict) for v in tables.values()):
        raise UserError(f"{path}: [architectures] must hold one table per model reference")
    for reference, table in tables.items():
        unknown = sorted(set(table) - set(ARCHITECTURE_KEYS))
        if unknown:
            raise UserError(f"{path}: architecture {reference!r}: unknown key(s) {', '.join(unknown)}; "
                            f"allowed: {', '.join(ARCHITECTURE_KEYS)}")
        flags = ("tie_word_embeddings", "attention_bias")
        bad = [k for k, v in table.items() if not isinstance(v, bool if k in flags else int)
               or (k not in flags and (isinstance(v, bool) or v < 1))]   # a shape is a positive count (p03)
        if bad:
            raise UserError(f"{path}: architecture {reference!r}: {bad[0]} must be "
                            f"{'true or false' if bad[0] in flags else 'a whole number of at least 1'}"
                            f", got {table[bad[0]]!r}")
    return tables


def load_registry(path: str | Path | None = None) -> dict[str, PairSpec]:
    """All pairs of a registry file, by name, in file order."""
    path, data = _read_toml(path)
    entries = data.get("pair")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path}: no [[pair]] tables found")
    pairs: dict[str, PairSpec] = {}
    for i, raw in enumerate(entries):
        spec = _parse_entry(raw, i, path)
        if spec.name in pairs:
            raise UserError(f"{path}: pair name {spec.name!r} appears twice")
        pairs[spec.name] = spec
    return pairs


def get_pair(name: str, path: str | Path | None = None) -> PairSpec:
    pairs = load_registry(path)
    if name not in pairs:
        raise UserError(f"unknown pair {name!r}; known pairs: {', '.join(pairs)}")
    return pairs[name]


def bundled_pairs(path: str | Path | None = None) -> list[PairSpec]:
    """Pairs that run offline without a hub (the SmolLM2 post-trainings and the tiny models)."""
    return [p for p in load_registry(path).values() if p.bundled]
