"""`python -m harness <command>`. Only the module of the chosen command is imported, so light
commands (`report diff`, `--help`) never load torch or transformers."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from typing import Callable

from harness.errors import UserError

# command -> (module defining `register(subparsers)` for it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "eap": ("harness.cli.eap", "edge attribution patching scores for a model"),
    "ablate": ("harness.cli.ablate", "exact loss change when each chosen edge is removed"),
    "fidelity": ("harness.cli.ablate", "compare EAP scores with exact ablation deltas"),
    "generate": ("harness.cli.data", "answer a dataset with one model and check the answers"),
    "check": ("harness.cli.data", "grade saved generations again (e.g. another --grader) without a model"),
    "select": ("harness.cli.data", "select questions (Eqs. 10-12) and write EAP input rows"),
    "report": ("harness.cli.report", "compare and merge claim reports"),
    "posttrain": ("harness.cli.posttrain", "post-train a base model with GRPO, RLOO, DPO or online DPO (LoRA)"),
    "posttrain-eval": ("harness.cli.posttrain", "held-out accuracy of a posttrain run from the answer fixtures"),
    "posttrain-table": ("harness.cli.posttrain", "held-out accuracy table of posttrain runs"),
    "answer-fixtures": ("harness.cli.fixtures", "ship the bundled pairs' greedy answers as verified fixtures"),
    "plan": ("harness.cli.plan", "predicted peak memory, work and batch sizes of each audit stage, from configs"),
    "gpu-check": ("harness.cli.gpu_check", "EAP, the planner and throughput checked on a GPU (one JSON file)"),
    "audit": ("harness.cli.audit", "run the claim suites on the bundled pairs and write the report"),
    "cluster": ("harness.cli.cluster", "an audit split into shards run as SLURM (or local) jobs, then merged"),
}


def whole_number(flag: str, minimum: int | None = 1, maximum: int | None = None) -> Callable[[str], int]:
    """argparse `type` for a whole-number option in [minimum, maximum]; anything else is a UserError
    (one line, exit 2) naming the flag."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UserError(f"{flag} must be a whole number, got {text!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = (f"between {minimum} and {maximum}" if minimum is not None and maximum is not None
                      else f"at least {minimum}" if minimum is not None else f"at most {maximum}")
            raise UserError(f"{flag} must be {bounds}, got {value}")
        return value
    parse.__name__ = "whole number"
    return parse


def real_number(flag: str, low: float, high: float, *, open_low: bool = False,
                open_high: bool = False) -> Callable[[str], float]:
    """argparse `type` for a finite number in the interval low..high (each end open or closed)."""
    shown = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"{flag} must be a number in {shown}, got {text!r}") from None
        inside = (low < value if open_low else low <= value) and (value < high if open_high else value <= high)
        if not (math.isfinite(value) and inside):
            raise UserError(f"{flag} must be a number in {shown}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with `command`'s full arguments; every other command is listed by name and help."""
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    if command in COMMANDS:
        importlib.import_module(COMMANDS[command][0]).register(subparsers)
    for name, (_, help_text) in COMMANDS.items():
        if name not in subparsers.choices:
            subparsers.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(command).parse_args(argv)   # option types raise UserError too
        return int(args.run(args) or 0)
    except BrokenPipeError:   # the reader left (`... | head -1`): what it read was printed (finding v04)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return UserError.exit_code
