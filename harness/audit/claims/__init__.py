"""Catalogue of the audited paper's claims (arXiv 2509.21044), one `ClaimSpec` each.

`direction` names the shape of the test a claim needs:
  increase / decrease  one-sided paired test, post vs base, in that direction;
  weaker               DPO's change is smaller than online RL's (or equivalent to zero);
  fades                share of counter-examples falls as alpha grows (trend test);
  proportion           share of experiments with the claimed sign reaches a stated level;
  faithful             EAP scores agree with exact ablation above a fidelity threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import UserError

DIRECTIONS = ("increase", "decrease", "weaker", "fades", "proportion", "faithful")


@dataclass(frozen=True)
class ClaimSpec:
    id: str
    name: str
    section: str
    statement: str
    direction: str

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"claim {self.id}: direction {self.direction!r} not in {DIRECTIONS}")


CLAIMS: tuple[ClaimSpec, ...] = (
    ClaimSpec("C1", "intensity", "§4.3, Table 1",
              "Online RL (PPO/GRPO) raises Activation Intensity (mean |W|).", "increase"),
    ClaimSpec("C2", "complexity", "§4.3, Table 1",
              "Online RL raises Information Complexity (entropy of the |W| histogram).", "increase"),
    ClaimSpec("C3", "kurtosis", "§4.3, Table 1",
              "Online RL lowers Distribution Kurtosis of the edge weights.", "decrease"),
    ClaimSpec("C4", "dpo_deviates", "§4.3, Table 1",
              "DPO's changes are weaker or inconsistent compared with online RL.", "weaker"),
    ClaimSpec("C5", "alpha_fade", "§4.3, Table 1",
              "Counter-examples (DeepSeek-Math, Mistral) fade as alpha grows.", "fades"),
    ClaimSpec("C6", "diversity", "§4.3, Fig. 3a",
              "Inter-sample diversity rises after online RL in at least 95% of experiments.",
              "proportion"),
    ClaimSpec("C7", "node_entropy", "§4.3, Fig. 3b",
              "Per-node output-edge entropy rises after online RL.", "increase"),
    ClaimSpec("C8", "eap_fidelity", "§3.2, Eq. 8-9",
              "EAP is a faithful, tractable stand-in for edge ablation.", "faithful"),
    ClaimSpec("C9", "accuracy", "Appendix C, Table 4",
              "Post-training improved task accuracy.", "increase"),
)

CLAIMS_BY_ID = {claim.id: claim for claim in CLAIMS}


def get_claim(claim_id: str) -> ClaimSpec:
    """The claim with this id ('C1'..'C9'), or a UserError listing the known ids."""
    try:
        return CLAIMS_BY_ID[claim_id]
    except KeyError:
        raise UserError(f"unknown claim {claim_id!r}; known: {', '.join(CLAIMS_BY_ID)}") from None
