"""A model's shape as the planner needs it, read from a HF config alone (no weights).

Shapes come from, in order: the registry's `[architectures."<reference>"]` tables (the paper pairs
ship theirs, so planning works offline), a local folder's config.json, or the hub's config.json
(`transformers.AutoConfig`; only that file is fetched).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.models.registry import ARCHITECTURE_KEYS as CONFIG_KEYS


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer (llama-like: gated MLP, grouped-query attention, RMSNorm)."""

    n_layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    context: int
    head_dim: int
    qkv_bias: bool = False

    @classmethod
    def from_config(cls, config, where: str) -> ModelShape:
        """From a HF config (a `PretrainedConfig`, a `config.json` dict with its model_type, or a
        registry table of CONFIG_KEYS); `where` names it in errors."""
        if isinstance(config, dict) and "model_type" in config:
            from transformers import AutoConfig

            config = AutoConfig.for_model(**config)     # its attribute aliases (GPT-2's n_embd, ...)
        get = config.get if isinstance(config, dict) else (lambda key, default=None: getattr(config, key, default))
        missing = [k for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size",
                               "max_position_embeddings") if get(k) is None]
        if missing:
            raise UserError(f"{where}: the model config lacks {', '.join(missing)}; the planner reads "
                            f"{', '.join(CONFIG_KEYS)}")
        heads, hidden = int(get("num_attention_heads")), int(get("hidden_size"))
        return cls(n_layers=int(get("num_hidden_layers")), hidden=hidden,
                   intermediate=int(get("intermediate_size") or get("n_inner") or 4 * hidden), heads=heads,
                   kv_heads=int(get("num_key_value_heads") or heads), vocab=int(get("vocab_size")),
                   tied=bool(get("tie_word_embeddings", False)), context=int(get("max_position_embeddings")),
                   head_dim=int(get("head_dim") or hidden // heads),
                   qkv_bias=bool(get("attention_bias", get("model_type") == "qwen2")))

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def layer_parameters(self) -> int:
        """One decoder layer's weights: attention, gated MLP, its two norms."""
        h, i = self.hidden, self.intermediate
        attention = 2 * h * self.q_dim + 2 * h * self.kv_dim
        if self.qkv_bias:
            attention += self.q_dim + 2 * self.kv_dim
        return attention + 3 * h * i + 2 * h

    @property
    def parameters(self) -> int:
        """Weight count: embeddings (and an untied head), the layers, the final norm."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.n_layers * self.layer_parameters + self.hidden


def shape_of(reference: str, architectures: dict[str, dict]) -> ModelShape:
    """The shape of a model reference (hub id, local folder, `bundled:`/`tiny:` name)."""
    if reference in architectures:
        return ModelShape.from_config(architectures[reference], f"registry architecture {reference!r}")
    if reference.startswith("tiny:"):
        from harness.models.tiny import CHARS, SPECIAL, make_config

        return ModelShape.from_config(make_config(reference.split(":")[1], len(SPECIAL) + len(CHARS)), reference)
    path = Path(reference).expanduser()
    config_file = path / "config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"{config_file} is not a JSON model config ({err})") from None
        return ModelShape.from_config(config, str(config_file))
    if path.exists() or reference.startswith(("bundled:", ".", "/", "~")):
        raise UserError(f"no shape for {reference}: it has no config.json and the registry has no "
                        f"[architectures.{json.dumps(reference)}] table; add one (keys: {', '.join(CONFIG_KEYS)})")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(reference)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"no shape for hub model {reference}: its config could not be read ({first}); "
                        "add an [architectures] table for it to the registry to plan offline") from None
    return ModelShape.from_config(config, f"hub config of {reference}")
