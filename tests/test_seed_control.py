"""The seed control: a pair of two runs of one algorithm that differ only in the seed is tested by
every online-RL claim, judged as a family of its own (it never changes a real cell's Holm
correction), and reported as a control row that says which claims pass on it."""

from __future__ import annotations

from harness.audit.grid import RunGrid
from harness.audit.verdicts import CellResult, Verdict
from harness.models.registry import load_registry
from harness.report.document import ClaimsRun
from harness.report.matrix import build_matrix, claim_answer, control_summary

CONTROL = "smollm2-grpo-seeds"


def test_control_cells_are_their_own_family_for_every_online_rl_claim():
    grid = RunGrid.build(load_registry())
    assert CONTROL in grid.pairs
    for claim in ("C1", "C2", "C3", "C5", "C7", "C8", "C9"):
        real, control = grid.family(claim), grid.family(claim, control=True)
        assert control and {g.pair for g in control} == {CONTROL}, claim
        assert CONTROL not in {g.pair for g in real}, claim
    assert not grid.family("C4", control=True)          # the control is no preference pair
    assert CONTROL not in grid.rl_pairs()                # nor one of C4's and C6's online-RL pairs
    assert all(pair != CONTROL for pair, _, _ in grid.experiments("C6"))


def _cell(claim: str, pair: str, verdict: Verdict, control: bool) -> CellResult:
    return CellResult(claim_id=claim, claim_name=claim, cell_id=f"{claim}-{pair}", verdict=verdict, rule="r",
                      pair=pair, dataset="d", alpha=0.1, extra={"control": "seed"} if control else {})


def test_report_marks_the_control_row_and_names_the_claims_the_control_decides():
    """A control decided in either direction decides the claim: SUPPORTED on C1 and REFUTED on C2 are named
    alike, an undecided one (C3) is not, and C9 (behaviour) is never the control's to decide."""
    cells = [_cell("C1", "smollm2-grpo", Verdict.SUPPORTED, False),
             _cell("C1", CONTROL, Verdict.SUPPORTED, True),
             _cell("C2", "smollm2-grpo", Verdict.SUPPORTED, False),
             _cell("C2", CONTROL, Verdict.REFUTED, True),
             _cell("C3", "smollm2-grpo", Verdict.SUPPORTED, False),
             _cell("C3", CONTROL, Verdict.INCONCLUSIVE, True),
             _cell("C9", CONTROL, Verdict.REFUTED, True)]
    summary = control_summary(cells)
    assert summary.startswith(f"Seed control ({CONTROL}): decides C1, C2: ") and "not attributable" in summary
    assert "C3" not in summary.split("(")[1] and "C9" not in summary
    assert f"{CONTROL} (seed control) · d · a010" in build_matrix(cells).experiments
    for claim in ("C1", "C2"):
        answer = claim_answer([c for c in cells if c.claim_id == claim])
        assert "per checkpoint on EAP 1 SUP;" in answer and "not attributable to the algorithm" in answer, answer
    assert "not attributable" not in claim_answer([c for c in cells if c.claim_id == "C3"])
    assert ClaimsRun("r", cells).summary()["seed_control"] == summary
    assert control_summary([c for c in cells if not c.extra]) is None
    assert "decides no claim" in control_summary([cells[5]])


def test_the_claim_answer_counts_each_fidelity_measurement_once():
    """C4's three metric cells of one pair, dataset and alpha read one fidelity measurement: counted once."""
    cells = [CellResult(claim_id="C4", claim_name="C4", cell_id=f"C4-{m}", verdict=Verdict.INCONCLUSIVE, rule="r",
                        pair="smollm2-dpo", dataset="d", alpha=0.3, metric=m, fidelity={"status": "FAITHFUL"})
             for m in ("intensity", "complexity", "kurtosis")]
    assert "EAP fidelity 1 FAITHFUL (of 1 distinct measurements)" in claim_answer(cells)
