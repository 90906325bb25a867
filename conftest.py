"""Wires the claim-audit pytest plugin into every test run."""

pytest_plugins = ["harness.pytest_plugin"]
