"""CB1-CB3 (harness.audit.claims.intervention) decided by their real rule and the family judge on planted
intervention curves: each reaches SUPPORTED, REFUTED and INCONCLUSIVE; the direction follows the
donor whichever way post-training moved; a model against its own copy decides nothing (real engine)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from model_factories import tiny_model
from test_reachability import PlantedRecords, heavy, judge

from harness.audit.claims.common import GridCell
from harness.audit.verdicts import Verdict
from harness.circuit.batches import Sample
from harness.circuit.crossmodel import intervention_curves
from harness.circuit.graph import build_graph
from harness.errors import UserError

G = GridCell("dpo", "d", 0.5, None, "own")
N, KS = 12, [1, 4, 16, 64]


def planted_part(gap: float, top: float, matched: float, seed: int, necessity: bool = False) -> dict:
    """Curves of one intervention: the donor scores the correct answer `gap` nats above the recipient
    (per question, +-0.2); the chosen edges move the recipient by the share `top` of that gap at
    every k, the matched ones by `matched` (+-0.05 nats noise). Necessity: `top`/`matched` nats of damage."""
    rng = np.random.default_rng(seed)
    clean = rng.normal(-2.0, 0.3, N)
    target = None if necessity else clean + gap + rng.uniform(-0.2, 0.2, N)
    step = (lambda share: -share) if necessity else (lambda share: share * (target - clean))
    noise = lambda: rng.normal(0, 0.05, (len(KS), N))  # noqa: E731
    return {"ks": KS, "clean": clean.tolist(), "clean_hit": [True] * N,
            "target": None if target is None else target.tolist(), "target_hit": None if necessity else [False] * N,
            "top": (clean + step(top) + noise()).tolist(), "matched": (clean + step(matched) + noise()).tolist(),
            "top_hit": [[False] * N] * len(KS), "matched_hit": [[True] * N] * len(KS),
            "change_share": [0.1, 0.2, 0.4, 0.7]}


class InterventionRecords(PlantedRecords):
    def __init__(self, curves: dict) -> None:
        rng = np.random.default_rng(0)
        base = heavy(rng, 4)
        super().__init__({("dpo", "d", 0.5): (base, base)})
        self.curves = curves

    def interventions(self, cell) -> dict:
        return self.curves


def curves(restore=(1.5, 0.0, 0.0), install=(1.5, 0.0, 0.0), necessity=(0.0, 0.0)) -> dict:
    return {"restore": planted_part(*restore, seed=1), "install": planted_part(*install, seed=2),
            "necessity": planted_part(0.0, *necessity, seed=3, necessity=True), "questions": N,
            "probes": [f"q{i}" for i in range(N)]}


@pytest.mark.parametrize("claim_id, planted, expected", [
    ("CB1", curves(restore=(1.5, 0.6, 0.1)), Verdict.SUPPORTED),
    ("CB1", curves(restore=(1.5, 0.05, 0.5)), Verdict.REFUTED),
    ("CB1", curves(restore=(1.5, 0.3, 0.3)), Verdict.INCONCLUSIVE),
    # post-training moved the other way (the base scores the answer lower): still toward the donor
    ("CB1", curves(restore=(-1.5, 0.6, 0.1)), Verdict.SUPPORTED),
    ("CB1", curves(restore=(-1.5, -0.4, 0.1)), Verdict.REFUTED),    # the chosen edges push away from the base
    ("CB2", curves(install=(-1.2, 0.5, 0.0)), Verdict.SUPPORTED),
    ("CB2", curves(install=(1.2, 0.0, 0.4)), Verdict.REFUTED),
    ("CB2", curves(install=(1.2, 0.2, 0.2)), Verdict.INCONCLUSIVE),
    ("CB3", curves(necessity=(1.0, 0.2)), Verdict.SUPPORTED),
    ("CB3", curves(necessity=(0.1, 0.8)), Verdict.REFUTED),
    ("CB3", curves(necessity=(0.5, 0.5)), Verdict.INCONCLUSIVE),
])
def test_each_causal_claim_reaches_every_verdict(claim_id, planted, expected) -> None:
    cell = judge(claim_id, InterventionRecords(planted), [G])[G]
    assert cell.verdict is expected, cell.reason
    curve = cell.extra["interventions"]["curve"]
    assert [row["k"] for row in curve] == KS and cell.n == N
    assert "behaviour_ks" in cell.rule and "matched" in cell.rule


def test_recovered_share_is_the_chosen_edges_movement_over_the_behaviour_gap() -> None:
    cell = judge("CB1", InterventionRecords(curves(restore=(1.5, 0.6, 0.1))), [G])[G]
    for row in cell.extra["interventions"]["curve"]:
        assert row["recovered_share"] == pytest.approx(0.6, abs=0.03)
        assert row["top_ci"][0] < row["top"] < row["top_ci"][1]


def test_a_pair_whose_behaviour_did_not_change_decides_nothing_even_with_a_planted_effect() -> None:
    """The gate: no difference between the models on the probes, so CB1 and CB3 (which read the post
    model's probes) are INCONCLUSIVE whatever the edges do."""
    planted = curves(restore=(0.0, 0.0, 0.0), necessity=(1.0, 0.0))
    for claim_id in ("CB1", "CB3"):
        cell = judge(claim_id, InterventionRecords(planted), [G])[G]
        assert cell.verdict is Verdict.INCONCLUSIVE and "no behaviour change detected" in cell.reason, cell.reason


def test_a_model_against_its_own_copy_decides_nothing_through_the_real_engine() -> None:
    """intervention_curves on a tiny model and its copy: every patch is the identity (patched = clean
    exactly), the gap is zero, and each of CB1-CB3 is INCONCLUSIVE, "no behaviour change detected"."""
    model = tiny_model("llama", dtype=torch.float32)
    twin = copy.deepcopy(model)
    graph = build_graph(2)
    rng = np.random.default_rng(0)
    probes = [Sample(f"q{i}", tuple(rng.integers(1, 60, 6).tolist()), tuple(rng.integers(1, 60, 2).tolist()))
              for i in range(N)]
    means = torch.from_numpy(rng.normal(size=(graph.n_src, graph.n_dst)).astype(np.float32))
    ks = [1, 2, 4, 8]   # the 2-layer graph has 23 real edges
    with pytest.raises(UserError, match="keep behaviour_ks at most 11"):
        intervention_curves(model, twin, probes, {"base": means, "post": means},
                            graph, [1, 16], 4, 0, 0)
    result = intervention_curves(model, twin, probes, {"base": means, "post": means},
                                 graph, ks, 4, 0, 0)
    for part in ("restore", "install"):
        assert np.array_equal(result[part]["top"], np.broadcast_to(result[part]["clean"], (len(ks), N)))
        assert result[part]["target"] == result[part]["clean"]
    assert result["necessity"]["top"] != result["necessity"]["matched"]     # zero ablation still acts
    records = InterventionRecords({**result, "questions": N})
    for claim_id in ("CB1", "CB2", "CB3"):
        cell = judge(claim_id, records, [G])[G]
        assert cell.verdict is Verdict.INCONCLUSIVE and "no behaviour change detected" in cell.reason, (claim_id, cell.reason)
