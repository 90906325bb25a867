"""Claim-audit harness: edge attribution, ablation, statistics and claim matrices for model pairs."""

__version__ = "0.1.0"
