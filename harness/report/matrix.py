"""The claim x experiment matrix shared by the terminal summary, Markdown and HTML views.

Rows are experiments (pair, dataset, alpha); columns are claims. An entry holds every cell of
that claim in that experiment (several metrics or token modes give several cells).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from harness.audit.algorithm import CONTROLLED, algorithm_answers, is_seed_control
from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.verdicts import CellResult, Verdict, alpha_tag

SHORT = {Verdict.SUPPORTED: "SUP", Verdict.REFUTED: "REF", Verdict.INCONCLUSIVE: "INC", Verdict.INVALID: "INV"}
# Worst first: the colour of a mixed entry is that of its worst verdict.
SEVERITY = (Verdict.INVALID, Verdict.REFUTED, Verdict.INCONCLUSIVE, Verdict.SUPPORTED)


def experiment_key(cell: CellResult) -> str:
    pair = (cell.pair or "–") + (" (seed control)" if is_seed_control(cell) else "")
    return " · ".join((pair, cell.dataset or "–", alpha_tag(cell.alpha) if cell.alpha is not None else "–"))


@dataclass(frozen=True)
class Matrix:
    claims: list[str]
    experiments: list[str]
    entries: dict[tuple[str, str], list[CellResult]]

    def entry_text(self, experiment: str, claim_id: str) -> str:
        """'SUPPORTED · exact: INCONCLUSIVE' for one cell (the exact part where it has a robustness
        verdict); '2 SUP 1 INC · exact: 3 INC' for several; '' for none."""
        cells = self.entries.get((experiment, claim_id), [])
        exact = [Verdict.parse(v) for v in (robustness_verdict(c) for c in cells) if v is not None]
        if len(cells) == 1:
            return cells[0].verdict.value + (f" · exact: {exact[0].value}" if exact else "")
        text = _counts([c.verdict for c in cells])
        return text + (f" · exact: {_counts(exact)}" if exact else "")

    def entry_verdict(self, experiment: str, claim_id: str) -> Verdict | None:
        """Worst verdict of the entry, or None when empty."""
        verdicts = {c.verdict for c in self.entries.get((experiment, claim_id), [])}
        return next((v for v in SEVERITY if v in verdicts), None)


def _counts(verdicts: list[Verdict]) -> str:
    counts = Counter(verdicts)
    return " ".join(f"{counts[v]} {SHORT[v]}" for v in reversed(SEVERITY) if counts[v])


def robustness_verdict(cell: CellResult) -> str | None:
    """The cell's verdict on exact ablation, or None where it has none."""
    return (cell.robustness or {}).get("verdict")


def claim_answer(cells: list[CellResult]) -> str:
    """One line per claim: the algorithm-level answers (harness.audit.algorithm: runs as the unit), then
    does it hold on the paper's estimator (EAP) per checkpoint, does it survive exact ablation, and is the
    seed control decided on it (then the effect is within seed-to-seed variation, not the algorithm's)."""
    answers = algorithm_answers(cells)
    by_kind: dict[str, list[Verdict]] = {}
    for a in answers:
        by_kind.setdefault(a.kind, []).append(a.verdict)
    algorithm = ("algorithm-level " + "; ".join(f"{kind} {_counts(v)}" for kind, v in by_kind.items()) + "; "
                 if by_kind else "")
    controls = [c for c in cells if is_seed_control(c)]
    cells = [c for c in cells if not is_seed_control(c)]
    decided = [c for c in controls if c.verdict in (Verdict.SUPPORTED, Verdict.REFUTED) and c.claim_id in CONTROLLED]
    control = (f"; seed control {_counts([c.verdict for c in controls])}"
               + (" (decided on the control: within seed-to-seed variation, not attributable to the algorithm)"
                  if decided else "")) if controls else ""
    on_eap = _counts([c.verdict for c in cells]) or "no cells"
    exact = [Verdict.parse(v) for v in (robustness_verdict(c) for c in cells) if v is not None]
    # one fidelity measurement per (pair, dataset, alpha, token mode): C4's metric cells share one
    measured = {(c.pair, c.dataset, c.alpha, c.token_mode): (c.fidelity or {}).get("status")
                for c in cells if c.fidelity}
    statuses = Counter(measured.values())
    fidelity = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items(), key=lambda x: str(x[0])) if s)
    fidelity = f"{fidelity} (of {len(measured)} distinct measurements)" if fidelity else ""
    survives = (f"on exact ablation {_counts(exact)} of {len(exact)} measured" if exact
                else "no exact-ablation version")
    return (f"{algorithm}per checkpoint on EAP {on_eap}; {survives}; EAP fidelity {fidelity or 'not measured'}"
            f"{control}")


def control_summary(cells: list[CellResult]) -> str | None:
    """Which claims the seed control decides (None without control cells). A control decided in either
    direction is decided between two runs of one algorithm (which seed sits on the base side is
    arbitrary), so on that claim no run's effect can be credited to the algorithm. C1-C7 only: C8 is a
    property of the method, C9 of behaviour."""
    controls = [c for c in cells if is_seed_control(c) and c.claim_id in CONTROLLED]
    if not controls:
        return None
    pairs = ", ".join(sorted({c.pair for c in controls if c.pair}))
    claims = list(dict.fromkeys(c.claim_id for c in sorted(controls, key=lambda c: c.cell_id)))
    decided = [cid for cid in claims if any(c.verdict in (Verdict.SUPPORTED, Verdict.REFUTED)
                                            for c in controls if c.claim_id == cid)]
    detail = "; ".join(f"{cid} {_counts([c.verdict for c in controls if c.claim_id == cid])}" for cid in claims)
    verdict = (f"decides {', '.join(decided)}: on those claims the effects are within seed-to-seed variation, "
               "not attributable to the algorithm" if decided else "decides no claim")
    return f"Seed control ({pairs}): {verdict} ({detail})"


def build_matrix(cells: list[CellResult]) -> Matrix:
    entries: dict[tuple[str, str], list[CellResult]] = {}
    for cell in sorted(cells, key=lambda c: c.cell_id):
        entries.setdefault((experiment_key(cell), cell.claim_id), []).append(cell)
    present = {c.claim_id for c in cells}
    claims = [cid for cid in CLAIMS_BY_ID if cid in present] + sorted(present - set(CLAIMS_BY_ID))
    controls = {experiment_key(c) for c in cells if is_seed_control(c)}
    experiments = sorted({key for key, _ in entries}, key=lambda e: (e in controls, e))   # controls apart, last
    return Matrix(claims, experiments, entries)


def claim_label(claim_id: str) -> str:
    spec = CLAIMS_BY_ID.get(claim_id)
    return f"{claim_id} {spec.name}" if spec else claim_id
