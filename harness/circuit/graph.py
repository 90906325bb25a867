"""The residual-stream graph: source nodes (outputs), destination slots (inputs) and real edges.

Layouts
- `paper`: sources `embed, attn.{l}, mlp.{l}` (2L+1); destinations `attn.{l}.q, attn.{l}.k,
  attn.{l}.v, mlp.{l}, sink` (4L+1). Real edges 4L²+3L+1.
- `block`: the same sources; one attention input per layer: `attn.{l}, mlp.{l}, sink` (2L+1).

Sources are in topological (prefix) order, so destination v reads the first `n_parents[v]` sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

from harness.errors import UserError


class Layout(str, Enum):
    PAPER = "paper"
    BLOCK = "block"


ATTENTION_SLOTS = {Layout.PAPER: ("q", "k", "v"), Layout.BLOCK: (None,)}


@dataclass(frozen=True)
class Destination:
    """An input slot: `kind` is 'attn', 'mlp' or 'sink'; `slot` is q/k/v (paper) or None."""

    name: str
    kind: str
    layer: int          # layer index; n_layers for the sink
    slot: str | None
    n_parents: int      # reads sources[:n_parents]


@dataclass(frozen=True)
class Graph:
    layout: Layout
    n_layers: int
    sources: tuple[str, ...]
    destinations: tuple[Destination, ...]

    @property
    def n_src(self) -> int:
        return len(self.sources)

    @property
    def n_dst(self) -> int:
        return len(self.destinations)

    @property
    def destination_names(self) -> list[str]:
        return [d.name for d in self.destinations]

    def mask(self) -> torch.Tensor:
        """bool [n_src, n_dst]: True where the edge u→v exists (u upstream of v)."""
        mask = torch.zeros(self.n_src, self.n_dst, dtype=torch.bool)
        for j, dest in enumerate(self.destinations):
            mask[: dest.n_parents, j] = True
        return mask

    @property
    def n_edges(self) -> int:
        return sum(d.n_parents for d in self.destinations)

    def destination_index(self, name: str) -> int:
        for j, dest in enumerate(self.destinations):
            if dest.name == name:
                return j
        raise UserError(f"no destination named {name!r} in the {self.layout.value} layout")

    def source_index(self, name: str) -> int:
        try:
            return self.sources.index(name)
        except ValueError:
            raise UserError(f"no source named {name!r} in the {self.layout.value} layout") from None


def build_graph(n_layers: int, layout: Layout | str = Layout.PAPER) -> Graph:
    try:
        layout = Layout(layout)
    except ValueError:
        raise UserError(f"unknown layout {layout!r}; choose paper or block") from None
    sources = ["embed"]
    for layer in range(n_layers):
        sources += [f"attn.{layer}", f"mlp.{layer}"]
    destinations = []
    for layer in range(n_layers):
        for slot in ATTENTION_SLOTS[layout]:
            name = f"attn.{layer}" + (f".{slot}" if slot else "")
            destinations.append(Destination(name, "attn", layer, slot, 1 + 2 * layer))
        destinations.append(Destination(f"mlp.{layer}", "mlp", layer, None, 2 + 2 * layer))
    destinations.append(Destination("sink", "sink", n_layers, None, 1 + 2 * n_layers))
    return Graph(layout, n_layers, tuple(sources), tuple(destinations))
