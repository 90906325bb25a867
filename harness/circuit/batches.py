"""EAP and ablation inputs: samples (prompt + target token ids), their padded batches, the target
NLL loss (the paper's Eq. 13), and the JSONL row reader of the command line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Sequence

import torch

from harness.errors import UserError
from harness.files import read_utf8


class Positions(str, Enum):
    ALL = "all"          # every input position, prompt included (the paper)
    TARGETS = "targets"  # only positions whose logits predict a target token


@dataclass(frozen=True)
class Sample:
    """One scored sequence: the loss is the mean NLL of `target_ids` after `prompt_ids`."""

    id: str
    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]

    @classmethod
    def from_row(cls, row: dict) -> "Sample":
        """From an EAP input row {"id", "prompt_ids", "target_ids"}."""
        return cls(str(row["id"]), tuple(row["prompt_ids"]), tuple(row["target_ids"]))

    @property
    def input_length(self) -> int:
        return len(self.prompt_ids) + len(self.target_ids) - 1


@dataclass
class Batch:
    """Right-padded model inputs for a list of samples.

    input_ids, attention_mask: [b, t]; targets: [b, t] (−100 where no target is predicted);
    target_mask, position_mask: float32 [b, t].
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    target_mask: torch.Tensor
    position_mask: torch.Tensor

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(getattr(self, f).to(device) for f in
                       ("input_ids", "attention_mask", "targets", "target_mask", "position_mask")))


LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]


def token_nll(logits: torch.Tensor, targets: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """NLL of each target token, 0 where none is predicted: [b, t, V] logits, [b, t] targets and
    mask → [b, t], in float32 (float64 for float64 models)."""
    logprobs = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    return -logprobs.gather(-1, targets.clamp(min=0)[..., None])[..., 0] * target_mask


def target_nll(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Mean NLL of each sample's target tokens (self-entropy on own tokens, or cross-entropy on
    reference tokens: Eq. 13). [b, t, V] → [b], computed in float32 (float64 for float64 models)."""
    return token_nll(logits, batch.targets, batch.target_mask).sum(-1) / batch.target_mask.sum(-1)


def target_span(batch: Batch) -> int:
    """How many last positions hold every target of the batch (the head is needed there only)."""
    predicts = batch.target_mask.any(0).nonzero()
    return int(batch.target_mask.shape[1] - predicts.min()) if len(predicts) else batch.target_mask.shape[1]


def at_positions(batch: Batch, span: slice, rows: int | None = None) -> Batch:
    """The batch at positions `span` (views, no copy); rows: its one sample repeated to that many rows
    (stacked ablation variants)."""
    parts = (getattr(batch, f)[:, span] for f in
             ("input_ids", "attention_mask", "targets", "target_mask", "position_mask"))
    return Batch(*(p if rows is None else p.expand(rows, -1) for p in parts))


def last_positions(batch: Batch, k: int) -> Batch:
    """The batch restricted to its last k positions (what `target_nll` reads of it)."""
    return at_positions(batch, slice(-k, None))


def validate_samples(samples: Sequence[Sample], max_length: int | None) -> None:
    if not samples:
        raise UserError("no samples to score: the input is empty")
    for sample in samples:
        if not sample.prompt_ids:
            raise UserError(f"sample {sample.id!r}: prompt_ids is empty; the first target needs a "
                            "prompt token as context")
        if not sample.target_ids:
            raise UserError(f"sample {sample.id!r}: target_ids is empty; give at least one token")
        if max_length is not None and sample.input_length > max_length:
            raise UserError(f"sample {sample.id!r}: prompt+targets is {sample.input_length} tokens, "
                            f"longer than the model's context of {max_length}; truncate it")


def make_batch(samples: Sequence[Sample], pad_id: int, positions: Positions) -> Batch:
    """Input = prompt + targets[:-1]; position p−1+i predicts target i."""
    width = max(s.input_length for s in samples)
    b = len(samples)
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(b, width, dtype=torch.long)
    targets = torch.full((b, width), -100, dtype=torch.long)
    for i, s in enumerate(samples):
        seq = list(s.prompt_ids) + list(s.target_ids[:-1])
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention_mask[i, : len(seq)] = 1
        start = len(s.prompt_ids) - 1
        targets[i, start : start + len(s.target_ids)] = torch.tensor(s.target_ids)
    target_mask = (targets >= 0).float()
    position_mask = attention_mask.float() if positions is Positions.ALL else target_mask.clone()
    return Batch(input_ids, attention_mask, targets, target_mask, position_mask)


def read_samples(path: Path) -> list[Sample]:
    """Rows `{"id": str, "prompt_ids": [int], "target_ids": [int]}`, one per line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input file {path} does not exist")
    samples = []
    for line_no, line in enumerate(read_utf8(path, "input file").splitlines(), start=1):
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

