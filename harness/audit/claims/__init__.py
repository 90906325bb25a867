"""The audited paper's claims (arXiv 2509.21044) as data, one `ClaimSpec` each, and their rules.

Each claim names the module of this package whose `judge(audit, claim_id, cells, context)` decides
its family of cells (imported only when a family is judged, so reading the catalogue stays light),
the algorithm kinds of the pairs it speaks about (None: every pair), its metric where it has one,
and its grid axes (the arguments of its parametrised test).

`direction` names the shape of the test a claim needs:
  increase / decrease  one-sided paired test, post vs base, in that direction;
  weaker               DPO's change is smaller than online RL's (or equivalent to zero);
  fades                share of counter-examples falls as alpha grows (trend test);
  proportion           share of experiments with the claimed sign reaches a stated level;
  faithful             EAP scores agree with exact ablation above a fidelity threshold.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from harness.errors import UserError
from harness.models.registry import ONLINE_RL, PREFERENCE_KINDS

DIRECTIONS = ("increase", "decrease", "weaker", "fades", "proportion", "faithful")


@dataclass(frozen=True)
class ClaimSpec:
    id: str
    name: str
    section: str
    statement: str
    direction: str
    rule: str | None = None                     # module of harness.audit.claims with its `judge`
    reads: tuple[str, ...] | None = (ONLINE_RL,)  # algorithm kinds of the pairs it reads; None: all
    metric: str | None = None                   # the metric a one-metric claim tests
    axes: tuple[str, ...] = ("pair", "dataset", "alpha", "token_mode")  # its cells' grid arguments

    def describe(self) -> dict[str, str]:
        """What a report records of the claim: id, name, section, statement, direction."""
        return {"id": self.id, "name": self.name, "section": self.section, "statement": self.statement,
                "direction": self.direction}

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"claim {self.id}: direction {self.direction!r} not in {DIRECTIONS}")


CLAIMS: tuple[ClaimSpec, ...] = (
    ClaimSpec("C1", "intensity", "§4.3, Table 1",
              "Online RL (PPO/GRPO) raises Activation Intensity (mean |W|).", "increase",
              "metric_change", metric="intensity"),
    ClaimSpec("C2", "complexity", "§4.3, Table 1",
              "Online RL raises Information Complexity (entropy of the |W| histogram).", "increase",
              "metric_change", metric="complexity"),
    ClaimSpec("C3", "kurtosis", "§4.3, Table 1",
              "Online RL lowers Distribution Kurtosis of the edge weights.", "decrease",
              "metric_change", metric="kurtosis"),
    ClaimSpec("C4", "dpo_deviates", "§4.3, Table 1",
              "DPO's changes are weaker or inconsistent compared with online RL.", "weaker",
              "preference", reads=PREFERENCE_KINDS,
              axes=("pair", "dataset", "alpha", "metric", "token_mode")),
    ClaimSpec("C5", "alpha_fade", "§4.3, Table 1",
              "Counter-examples (DeepSeek-Math, Mistral) fade as alpha grows.", "fades",
              "alpha_fade", axes=("pair", "dataset", "metric", "token_mode")),
    ClaimSpec("C6", "diversity", "§4.3, Fig. 3a",
              "Inter-sample diversity rises after online RL in at least 95% of experiments.",
              "proportion", "diversity", axes=("token_mode",)),
    ClaimSpec("C7", "node_entropy", "§4.3, Fig. 3b",
              "Per-node output-edge entropy rises after online RL.", "increase",
              "metric_change", metric="node_entropy"),
    ClaimSpec("C8", "eap_fidelity", "§3.2, Eq. 8-9",
              "EAP is a faithful, tractable stand-in for edge ablation.", "faithful",
              "fidelity", reads=None),
    ClaimSpec("C9", "accuracy", "Appendix C, Table 4",
              "Post-training improved task accuracy.", "increase",
              "accuracy", reads=None, axes=("pair", "dataset")),
)

CLAIMS_BY_ID = {claim.id: claim for claim in CLAIMS}


def get_claim(claim_id: str) -> ClaimSpec:
    """The claim with this id ('C1'..'C9'), or a UserError listing the known ids."""
    try:
        return CLAIMS_BY_ID[claim_id]
    except KeyError:
        raise UserError(f"unknown claim {claim_id!r}; known: {', '.join(CLAIMS_BY_ID)}") from None


def family_rule(claim_id: str) -> Callable:
    """The `judge` function that decides this claim's family of cells."""
    claim = get_claim(claim_id)
    if claim.rule is None:
        raise UserError(f"claim {claim_id} has no family rule in harness.audit.claims; its test must judge it")
    return importlib.import_module(f"{__name__}.{claim.rule}").judge
