"""`python -m harness <command>`: each stage module registers its own subcommand."""

from __future__ import annotations

import argparse
import importlib
import sys

from harness.errors import UserError

# Modules that define `register(subparsers)`; each adds one or more subcommands.
COMMAND_MODULES = [
    "harness.cli.eap",
    "harness.cli.ablate",
    "harness.cli.data",
    "harness.cli.report",
    "harness.training.posttrain",
    "harness.cli.audit",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return UserError.exit_code
