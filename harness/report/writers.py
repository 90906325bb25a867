"""Write one run's reports into a folder: claims.json, claims.md, claims.html, claims-junit.xml,
and figures/*.png. Every file is written atomically."""

from __future__ import annotations

import base64
import html
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from harness.audit.algorithm import RULE as ALGORITHM_RULE
from harness.audit.algorithm import scope_head, scope_lines, scope_text
from harness.audit.claims import CLAIMS_BY_ID
from harness.audit.verdicts import CellResult, Verdict, alpha_tag
from harness.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from harness.report.document import ClaimsRun, Figure
from harness.report.figures import derived_figures
from harness.report.matrix import SEVERITY, Matrix, build_matrix, claim_answer, claim_label, control_summary

COLOURS = {Verdict.SUPPORTED: "#1a7f37", Verdict.REFUTED: "#cf222e",
           Verdict.INCONCLUSIVE: "#bf8700", Verdict.INVALID: "#8250df"}
# Scalar fields shown per cell and exported as JUnit properties.
NUMBER_FIELDS = ("n", "base_value", "post_value", "effect", "ci_low", "ci_high", "effect_size",
                 "p_value", "p_holm", "p_bh")
PROPERTY_FIELDS = ("claim_id", "claim_name", "cell_id", "verdict", "rule", "reason", "pair", "dataset",
                   "alpha", "metric", "token_mode", "ci_method") + NUMBER_FIELDS


def fmt(value: Any) -> str:
    """Numbers to 3 significant digits (ints as is); None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def ci_text(cell: CellResult) -> str:
    if cell.ci_low is None and cell.ci_high is None:
        return "–"
    method = f" ({cell.ci_method})" if cell.ci_method else ""
    return f"[{fmt(cell.ci_low)}, {fmt(cell.ci_high)}]{method}"


def cell_properties(cell: CellResult) -> list[tuple[str, str]]:
    """(name, value) pairs of a cell's verdict fields, for JUnit properties."""
    data = cell.to_dict()
    props = [(name, "" if data[name] is None else str(data[name])) for name in PROPERTY_FIELDS]
    props.append(("fidelity", json.dumps(data["fidelity"], sort_keys=True)))
    props.append(("robustness", json.dumps(data["robustness"], sort_keys=True)))
    props.append(("funnel", json.dumps(data["funnel"])))
    props.append(("provenance", json.dumps(data["provenance"], sort_keys=True)))
    return props


def population_property(cell: CellResult, pop: dict) -> tuple[str, str]:
    """The population the cell's verdict is about, in words (harness.audit.algorithm.scope_text)."""
    return ("population", scope_text(pop, [cell.pair]) if cell.pair else scope_text(pop))


# ---------------------------------------------------------------- the first screen: answers about algorithms

ANSWER_HEAD = ("claim", "algorithm kind", "dataset · α · metric", "answer", "runs", "pooled change [95% CI]",
               "between runs τ² · I²", "seed control", "why")


CLAIM_HEAD = ("claim", "algorithm kind", "algorithm-level answer", "runs", "pooled change [95% CI], per point",
              "between runs τ² · I²", "seed control", "scope")


def claim_rows(summary: dict) -> list[tuple[Verdict, list[str]]]:
    """One row per claim (and algorithm kind): its algorithm-level answers at a glance, coloured by the
    worst of them."""
    by_claim: dict[tuple[str, str], list[dict]] = {}
    for a in summary.get("algorithm", []):
        by_claim.setdefault((a["claim_id"], a["kind"]), []).append(a)
    rows = []
    for (claim_id, kind), answers in by_claim.items():
        verdicts = [Verdict(a["verdict"]) for a in answers]
        counts = ", ".join(f"{verdicts.count(v)} {v.value}" for v in Verdict if verdicts.count(v))
        pooled = [a for a in answers if a.get("pooled")]
        point = lambda a: " ".join(x for x in (a["dataset"], None if a["alpha"] is None else f"α{a['alpha']:g}",  # noqa: E731
                                               a["metric"] if claim_id == "C4" else None) if x)
        controls = [c for a in answers for c in a["controls"]]
        decided = [c for c in controls if c["verdict"] in ("SUPPORTED", "REFUTED")]
        control = ("none" if not controls else f"decides ({len(decided)} of {len(controls)})" if decided
                   else f"undecided ({len(controls)})")
        pairs = sorted({r["pair"] for a in answers for r in a["runs"]})
        rows.append((next(v for v in SEVERITY if v in verdicts), [
            claim_label(claim_id), kind, counts, str(max(len(a["runs"]) for a in answers)),
            "; ".join(f"{point(a)}: {fmt(a['pooled']['estimate'])} [{fmt(a['pooled']['ci'][0])}, "
                      f"{fmt(a['pooled']['ci'][1])}]" for a in pooled) or "– (one run)",
            "; ".join(f"{fmt(a['pooled']['tau2'])} · {a['pooled']['i2']:.0%}" for a in pooled) or "–",
            control, f"{scope_head(summary['population'], pairs)} ({', '.join(pairs)})"
            + (", not the paper's 7B pairs" if summary["population"].get("bundled_only") else "")]))
    return rows


def answer_rows(summary: dict) -> list[tuple[Verdict, list[str]]]:
    """One row per algorithm-level answer (harness.audit.algorithm), in the first screen's columns."""
    rows = []
    for a in summary.get("algorithm", []):
        pooled = a.get("pooled")
        point = " · ".join(x for x in (a["dataset"], None if a["alpha"] is None else f"α {a['alpha']:g}", a["metric"])
                           if x)
        control = ", ".join(f"{c['pair']} {c['verdict']}" for c in a["controls"]) or "none on this point"
        rows.append((Verdict(a["verdict"]), [
            claim_label(a["claim_id"]), a["kind"], point, a["verdict"], str(len(a["runs"])),
            "–" if not pooled else f"{fmt(pooled['estimate'])} [{fmt(pooled['ci'][0])}, {fmt(pooled['ci'][1])}]",
            "–" if not pooled else f"{fmt(pooled['tau2'])} · {pooled['i2']:.0%}", control, a["reason"]]))
    return rows


BEHAVIOUR_HEAD = ("claim", "α", "runs · points", "Pearson r [95% CI]", "slope [95% CI]", "does the metric track accuracy?")


def behaviour_rows(summary: dict) -> list[list[str]]:
    """One row per metric claim and alpha: the metric's change against the accuracy change across runs."""
    rows = []
    for r in summary.get("metric_vs_accuracy", []):
        def interval(value, ci):
            return fmt(value) + ("" if ci is None else f" [{fmt(ci[0])}, {fmt(ci[1])}]")
        rows.append([claim_label(r["claim_id"]), fmt(r["alpha"]), f"{r['n_runs']} · {r['n_points']}",
                     interval(r["pearson_r"], r["r_ci"]), interval(r["slope"], r["slope_ci"]), r["tracks"]])
    return rows


EDGES_HEAD = ("run", "dataset", "α", "k", "share of the intensity change", "restore: share of the gap moved [chosen, nats]",
              "install: share of the gap moved [chosen, nats]")


def edges_rows(summary: dict) -> list[list[str]]:
    """One row per run, dataset, alpha and k of CB1/CB2: the patched edges' share of the intensity change
    and of the behaviour gap they move."""
    def moved(part):
        if not part:
            return "–"
        ci = part["top_ci"]
        return (f"{fmt(part['recovered_share'])} [{fmt(part['top'])} nats, CI {fmt(ci[0])}..{fmt(ci[1])}; "
                f"matched {fmt(part['matched'])}] {part['verdict']}")
    return [[r["pair"], r["dataset"], fmt(r["alpha"]), str(r["k"]), fmt(r["change_share"]), moved(r.get("restore")),
             moved(r.get("install"))] for r in summary.get("edges_and_behaviour", [])]


def _first_screen(fig: Figure) -> bool:
    """Figures shown with the answers at the top, not again on the claim's card."""
    return fig.name.endswith("-forest") or "-vs-accuracy" in fig.name or fig.name == "edges-vs-behaviour"


FIRST_SCREEN = ("Each row answers a claim about an algorithm, with the training run as the unit: SUPPORTED or "
                "REFUTED only when every run of that kind is, never from one run, and never while a seed control "
                "is decided in either direction.")


# ---------------------------------------------------------------- Markdown

def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_matrix(matrix: Matrix) -> list[str]:
    lines = ["| experiment | " + " | ".join(claim_label(c) for c in matrix.claims) + " |",
             "|---|" + "---|" * len(matrix.claims)]
    for exp in matrix.experiments:
        row = [matrix.entry_text(exp, c) or "" for c in matrix.claims]
        lines.append(f"| {_md_escape(exp)} | " + " | ".join(f"**{r}**" if r else "" for r in row) + " |")
    return lines


def render_markdown(run: ClaimsRun, figures: list[Figure], summary: dict | None = None) -> str:
    summary = summary if summary is not None else run.summary()
    counts = ", ".join(f"{n} {v}" for v, n in summary["verdicts"].items() if n)
    lines = [f"# Claim audit — run `{run.run_id}`", "",
             f"Created {run.created}. {summary['cells']} cells: {counts or 'none'}.", ""]
    rows = answer_rows(summary)
    if rows:
        lines += ["## Answers: does the algorithm do what the paper claims?", "", FIRST_SCREEN, "",
                  "Population:", "", *(f"- {_md_escape(x)}" for x in scope_lines(summary["population"])), "",
                  f"Rule: {ALGORITHM_RULE}.", "",
                  "| " + " | ".join(CLAIM_HEAD) + " |", "|" + "---|" * len(CLAIM_HEAD)]
        lines += ["| " + " | ".join(_md_escape(x) if i != 2 else f"**{x}**" for i, x in enumerate(row)) + " |"
                  for _, row in claim_rows(summary)]
        lines += ["", "Each answer, per dataset, α and metric:", "",
                  "| " + " | ".join(ANSWER_HEAD) + " |", "|" + "---|" * len(ANSWER_HEAD)]
        lines += ["| " + " | ".join(_md_escape(x) if i != 3 else f"**{x}**" for i, x in enumerate(row)) + " |"
                  for _, row in rows]
        lines.append("")
    control = control_summary(run.cells)
    if control:
        lines += [f"**{_md_escape(control)}**", ""]
    for claim_id, why in summary.get("off_grid", {}).items():
        lines += [f"Not tested on this grid: {claim_label(claim_id)}, {_md_escape(why)}.", ""]
    for fig in (f for f in figures if f.name.endswith("-forest")):
        lines += [f"![{_md_escape(fig.caption)}](figures/{fig.name}.png)", ""]
    behaviour = behaviour_rows(summary)
    if behaviour:
        lines += ["## Do the metrics track behaviour? Each metric's change against the accuracy change, across runs",
                  "", "| " + " | ".join(BEHAVIOUR_HEAD) + " |", "|" + "---|" * len(BEHAVIOUR_HEAD)]
        lines += ["| " + " | ".join(_md_escape(x) for x in row) + " |" for row in behaviour] + [""]
        for fig in (f for f in figures if "-vs-accuracy" in f.name):
            lines += [f"![{_md_escape(fig.caption)}](figures/{fig.name}.png)", ""]
    edges = edges_rows(summary)
    if edges:
        lines += ["## Do the changed edges carry the changed behaviour? (CB1, CB2)", "",
                  "| " + " | ".join(EDGES_HEAD) + " |", "|" + "---|" * len(EDGES_HEAD)]
        lines += ["| " + " | ".join(_md_escape(x) for x in row) + " |" for row in edges] + [""]
        for fig in (f for f in figures if f.name == "edges-vs-behaviour"):
            lines += [f"![{_md_escape(fig.caption)}](figures/{fig.name}.png)", ""]
    lines += ["## Matrix (each run and seed control; the controls last)", "", *_md_matrix(build_matrix(run.cells)), ""]
    for claim_id in run.claim_ids():
        spec = CLAIMS_BY_ID.get(claim_id)
        cells = sorted((c for c in run.cells if c.claim_id == claim_id), key=lambda c: c.cell_id)
        lines += [f"## {claim_label(claim_id)}", ""]
        if spec:
            lines += [f"> {spec.statement} (paper {spec.paper}, {spec.section}; expected direction: {spec.direction})", ""]
        if cells:
            lines += [f"Population: {_md_escape(scope_text(summary['population'], [c.pair for c in cells]))}.", ""]
        for rule in sorted({c.rule for c in cells}):
            lines += [f"Rule: {_md_escape(rule)}", ""]
        if cells:
            lines += [f"**Answer:** {_md_escape(claim_answer(cells))}", "",
                      "| cell | verdict | n | base | post | effect | CI | d_z | p | p Holm | p BH | fidelity | "
                      "exact ablation | reason |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for c in cells:
                lines.append("| " + " | ".join(_md_escape(x) for x in (
                    f"`{c.cell_id}`", f"**{c.verdict.value}**", fmt(c.n), fmt(c.base_value), fmt(c.post_value),
                    fmt(c.effect), ci_text(c), fmt(c.effect_size), fmt(c.p_value), fmt(c.p_holm), fmt(c.p_bh),
                    _fidelity_text(c), _robust_text(c), c.reason)) + " |")
            lines.append("")
        for fig in (f for f in figures if f.claim_id == claim_id and not _first_screen(f)):
            lines += [f"![{_md_escape(fig.caption)}](figures/{fig.name}.png)", "", f"*{fig.caption}*", ""]
    other = [f for f in figures if f.claim_id not in run.claim_ids()]
    if other:
        lines += ["## Other figures", ""]
        for fig in other:
            lines += [f"![{_md_escape(fig.caption)}](figures/{fig.name}.png)", "", f"*{fig.caption}*", ""]
    lines += ["## Provenance", "", "```json", json.dumps(run.provenance, indent=2, sort_keys=True, default=str),
              "```", ""]
    return "\n".join(lines)


def _fidelity_text(cell: CellResult) -> str:
    """'0.42 [0.31, 0.52] UNCERTAIN (vs 0.5, at α 0.3)' from the cell's fidelity record."""
    f = cell.fidelity
    if not f:
        return "–"
    low, high = (f.get("ci") or [None, None])[:2]
    where = f", at α {fmt(f['measured_at'])}" if f.get("measured_at") is not None else ""
    return f"{fmt(f.get('spearman'))} [{fmt(low)}, {fmt(high)}] {f.get('status', '')} (vs {fmt(f.get('threshold'))}{where})"


def _robust_text(cell: CellResult) -> str:
    r = cell.robustness
    if not r:
        return "–"
    if r.get("verdict") is None:
        return f"n/a: {r.get('reason', '')}"
    low, high = (r.get("ci") or [None, None])[:2]
    return f"{r['verdict']} (effect {fmt(r.get('effect'))} [{fmt(low)}, {fmt(high)}], p {fmt(r.get('p_value'))})"


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1f2328;background:#fff;max-width:1400px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.2em;margin:0 0 6px}
.meta{color:#59636e;font-size:.9em}
table{border-collapse:collapse;font-size:.82em;margin:8px 0}
th,td{border:1px solid #d1d9e0;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f6f8fa}
td.v{color:#fff;font-weight:600;text-align:center;white-space:nowrap}
.card{border:1px solid #d1d9e0;border-radius:8px;padding:12px 16px;margin:16px 0;box-shadow:0 1px 2px #0001}
.card .statement{font-style:italic;margin:4px 0}
.rule{background:#f6f8fa;border-left:4px solid #59636e;padding:4px 8px;margin:6px 0;font-size:.9em}
.badge{display:inline-block;color:#fff;border-radius:10px;padding:0 8px;font-size:.8em;margin-right:4px}
figure{margin:10px 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#59636e}
details{font-size:.85em}pre{background:#f6f8fa;padding:8px;overflow-x:auto;font-size:.8em}
.legend span{margin-right:10px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _verdict_td(verdict: Verdict | None, text: str) -> str:
    if verdict is None:
        return "<td></td>"
    return f'<td class="v" style="background:{COLOURS[verdict]}">{_e(text)}</td>'


def _badge(verdict: Verdict, count: int | None = None) -> str:
    label = verdict.value if count is None else f"{count} {verdict.value}"
    return f'<span class="badge" style="background:{COLOURS[verdict]}">{_e(label)}</span>'


def _html_matrix(matrix: Matrix) -> str:
    head = "".join(f"<th>{_e(claim_label(c))}</th>" for c in matrix.claims)
    rows = []
    for exp in matrix.experiments:
        tds = "".join(_verdict_td(matrix.entry_verdict(exp, c), matrix.entry_text(exp, c)) for c in matrix.claims)
        rows.append(f"<tr><th>{_e(exp)}</th>{tds}</tr>")
    return f"<table><tr><th>experiment</th>{head}</tr>{''.join(rows)}</table>"


def _html_figure(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (f'<figure><img alt="{_e(fig.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(fig.caption)}</figcaption></figure>")


def _html_cell_rows(cells: list[CellResult]) -> str:
    head = ("<tr><th>cell</th><th>verdict</th><th>n</th><th>base</th><th>post</th><th>effect</th><th>CI</th>"
            "<th>d<sub>z</sub></th><th>p</th><th>p Holm</th><th>p BH</th><th>fidelity</th><th>exact ablation</th>"
            "<th>reason</th></tr>")
    rows = []
    for c in cells:
        numbers = "".join(f"<td>{_e(x)}</td>" for x in (
            fmt(c.n), fmt(c.base_value), fmt(c.post_value), fmt(c.effect), ci_text(c), fmt(c.effect_size),
            fmt(c.p_value), fmt(c.p_holm), fmt(c.p_bh), _fidelity_text(c), _robust_text(c)))
        details = json.dumps({"funnel": c.funnel, "extra": c.extra, "provenance": c.provenance},
                             indent=1, sort_keys=True, default=str)
        rows.append(f"<tr><td><code>{_e(c.cell_id)}</code><details><summary>funnel, details, provenance"
                    f"</summary><pre>{_e(details)}</pre></details></td>"
                    f"{_verdict_td(c.verdict, c.verdict.value)}{numbers}<td>{_e(c.reason)}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def render_html(run: ClaimsRun, figures: list[Figure], summary: dict | None = None) -> str:
    summary = summary if summary is not None else run.summary()
    badges = "".join(_badge(Verdict(v), n) for v, n in summary["verdicts"].items() if n)
    cards = []
    for claim_id in run.claim_ids():
        spec = CLAIMS_BY_ID.get(claim_id)
        cells = sorted((c for c in run.cells if c.claim_id == claim_id), key=lambda c: c.cell_id)
        counts = summary["per_claim"].get(claim_id, {})
        parts = [f'<section class="card" id="{_e(claim_id)}"><h2>{_e(claim_label(claim_id))} '
                 + "".join(_badge(Verdict(v), n) for v, n in counts.items() if n) + "</h2>"]
        if spec:
            parts.append(f'<p class="statement">{_e(spec.statement)}</p>'
                         f'<p class="meta">paper {_e(spec.paper)}, {_e(spec.section)} · expected direction: '
                         f'{_e(spec.direction)}</p>')
        if cells:
            parts.append(f'<p><b>Answer:</b> {_e(claim_answer(cells))}</p>'
                         f'<p class="meta">Population: {_e(scope_text(summary["population"], [c.pair for c in cells]))}.</p>')
        parts += [f'<div class="rule">Rule: {_e(rule)}</div>' for rule in sorted({c.rule for c in cells})]
        if cells:
            parts.append(_html_cell_rows(cells))
        parts += [_html_figure(f) for f in figures if f.claim_id == claim_id and not _first_screen(f)]
        parts.append("</section>")
        cards.append("".join(parts))
    other = [f for f in figures if f.claim_id not in run.claim_ids()]
    if other:
        cards.append('<section class="card"><h2>Other figures</h2>'
                     + "".join(_html_figure(f) for f in other) + "</section>")
    provenance = json.dumps(run.provenance, indent=2, sort_keys=True, default=str)
    control = control_summary(run.cells)
    off_grid = "".join(f'<p class="meta">Not tested on this grid: {_e(claim_label(cid))}, {_e(why)}.</p>'
                       for cid, why in summary.get("off_grid", {}).items())
    rows = answer_rows(summary)
    answers = "" if not rows else (
        '<section class="answers"><h2>Answers: does the algorithm do what the paper claims?</h2>'
        f'<p>{_e(FIRST_SCREEN)}</p><p class="meta">Population:</p><ul class="meta">'
        + "".join(f"<li>{_e(x)}</li>" for x in scope_lines(summary["population"])) + "</ul>"
        + f'<details><summary>Rule</summary><p>{_e(ALGORITHM_RULE)}.</p></details><table><tr>'
        + "".join(f"<th>{_e(h)}</th>" for h in CLAIM_HEAD) + "</tr>"
        + "".join("<tr>" + "".join(_verdict_td(v, x) if i == 2 else f"<td>{_e(x)}</td>" for i, x in enumerate(row))
                  + "</tr>" for v, row in claim_rows(summary)) + "</table>"
        + '<p class="meta">Each answer, per dataset, α and metric:</p><table><tr>'
        + "".join(f"<th>{_e(h)}</th>" for h in ANSWER_HEAD) + "</tr>"
        + "".join("<tr>" + "".join(_verdict_td(v, x) if i == 3 else f"<td>{_e(x)}</td>" for i, x in enumerate(row))
                  + "</tr>" for v, row in rows) + "</table>"
        + (f'<p><b>{_e(control)}</b></p>' if control else "")
        + "".join(_html_figure(f) for f in figures if f.name.endswith("-forest")) + "</section>")
    behaviour = behaviour_rows(summary)
    if behaviour:
        answers += ('<section class="answers"><h2>Do the metrics track behaviour?</h2><p class="meta">Each metric\'s '
                    "change against the accuracy change, one point per run and dataset, CIs resampling runs.</p><table><tr>"
                    + "".join(f"<th>{_e(h)}</th>" for h in BEHAVIOUR_HEAD) + "</tr>"
                    + "".join("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in row) + "</tr>" for row in behaviour)
                    + "</table>" + "".join(_html_figure(f) for f in figures if "-vs-accuracy" in f.name) + "</section>")
    edges = edges_rows(summary)
    if edges:
        answers += ('<section class="answers"><h2>Do the changed edges carry the changed behaviour? (CB1, CB2)</h2>'
                    '<p class="meta">Per run, dataset and k: the patched edges\' share of the intensity change, and the '
                    "share of the gap between the models' log-probability of the reference solution that patching them "
                    "moves.</p><table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in EDGES_HEAD) + "</tr>"
                    + "".join("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in row) + "</tr>" for row in edges)
                    + "</table>" + "".join(_html_figure(f) for f in figures if f.name == "edges-vs-behaviour")
                    + "</section>")
    legend = "".join(f'<span>{_badge(v)}</span>' for v in Verdict)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Claim audit — {_e(run.run_id)}</title>
<style>{CSS}</style></head>
<body>
<h1>Claim audit — run <code>{_e(run.run_id)}</code></h1>
<p class="meta">Created {_e(run.created)} · {summary['cells']} cells · code {_e(run.provenance.get('code_version', '–'))}</p>
<p>{badges}</p>
{off_grid}
{answers}
<h2>Matrix (rows: each run and seed control, the controls last · dataset · α; columns: claims)</h2>
<p class="legend">{legend}</p>
{_html_matrix(build_matrix(run.cells))}
{f'<p><b>{_e(control)}</b></p>' if control and not rows else ''}
{''.join(cards)}
<section class="card"><h2>Provenance</h2><pre>{_e(provenance)}</pre></section>
</body></html>
"""


# ---------------------------------------------------------------- JUnit

def render_junit(run: ClaimsRun, summary: dict | None = None) -> bytes:
    """One <testcase> per cell; REFUTED is a failure, INVALID an error, INCONCLUSIVE skipped with its
    reason (the data decided nothing; dashboards filter on the `verdict` property as well)."""
    full = summary if summary is not None else run.summary()
    summary = full["verdicts"]
    suite = ET.Element("testsuite", name=f"claims-{run.run_id}", tests=str(len(run.cells)),
                       failures=str(summary["REFUTED"]), errors=str(summary["INVALID"]),
                       skipped=str(summary["INCONCLUSIVE"]), timestamp=run.created)
    for cell in sorted(run.cells, key=lambda c: c.cell_id):
        props = cell_properties(cell) + [population_property(cell, full["population"])]
        _junit_case(suite, f"claims.{cell.claim_id}", cell.cell_id, Verdict(cell.verdict), cell.reason, cell.rule, props)
    root = ET.Element("testsuites")
    root.append(suite)
    answers = full.get("algorithm", [])
    if answers:   # one testcase per algorithm-level answer: what a dashboard should read first
        verdicts = [Verdict(a["verdict"]) for a in answers]
        algorithm = ET.SubElement(root, "testsuite", name=f"algorithm-{run.run_id}", tests=str(len(answers)),
                                  failures=str(verdicts.count(Verdict.REFUTED)), errors=str(verdicts.count(Verdict.INVALID)),
                                  skipped=str(verdicts.count(Verdict.INCONCLUSIVE)), timestamp=run.created)
        for a, verdict in zip(answers, verdicts):
            name = "-".join(str(x) for x in (a["claim_id"], a["kind"], a["dataset"],
                                             None if a["alpha"] is None else alpha_tag(a["alpha"]), a["metric"],
                                             a["token_mode"]) if x is not None)
            scope = scope_text(full["population"], [r["pair"] for r in a["runs"] + a["controls"]])
            props = [("verdict", a["verdict"]), ("reason", a["reason"]), ("runs", json.dumps(a["runs"])),
                     ("controls", json.dumps(a["controls"])), ("pooled", json.dumps(a["pooled"])),
                     ("population", scope)]
            _junit_case(algorithm, f"algorithm.{a['claim_id']}", name, verdict, a["reason"], a["rule"], props)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _junit_case(suite: ET.Element, classname: str, name: str, verdict: Verdict, reason: str, rule: str,
                props: list[tuple[str, str]]) -> None:
    """One <testcase>: REFUTED a failure, INVALID an error, INCONCLUSIVE skipped with its reason."""
    case = ET.SubElement(suite, "testcase", classname=classname, name=name)
    properties = ET.SubElement(case, "properties")
    for key, value in props:
        ET.SubElement(properties, "property", name=key, value=value)
    message = f"{verdict.value}: {reason}" if reason else verdict.value
    if verdict is Verdict.INVALID:
        ET.SubElement(case, "error", message=message, type="INVALID").text = rule
    elif verdict is Verdict.INCONCLUSIVE:
        ET.SubElement(case, "skipped", message=message, type="INCONCLUSIVE").text = rule
    elif verdict is not Verdict.SUPPORTED:
        ET.SubElement(case, "failure", message=message, type=verdict.value).text = rule


# ---------------------------------------------------------------- all together

def write_reports(run: ClaimsRun, out_dir: str | Path) -> dict[str, Path]:
    """Write every report file of `run` into out_dir; returns {kind: path}.

    Figures: those attached to the run plus those derived from its cells (metric vs alpha,
    Fig. 3a); attached figures win on a name clash.
    """
    out = Path(out_dir)
    summary = run.summary()   # once: it bootstraps metric-vs-accuracy; every file below reads this one
    attached = {f.name for f in run.figures}
    figures = list(run.figures) + [f for f in derived_figures(run.cells, summary) if f.name not in attached]
    full = ClaimsRun(run.run_id, run.cells, run.provenance, figures, run.created)
    for fig in figures:
        atomic_write_bytes(out / "figures" / f"{fig.name}.png", fig.png)
    paths = {"json": out / "claims.json", "markdown": out / "claims.md",
             "html": out / "claims.html", "junit": out / "claims-junit.xml"}
    atomic_write_json(paths["json"], full.to_document(summary))
    atomic_write_text(paths["markdown"], render_markdown(full, figures, summary))
    atomic_write_text(paths["html"], render_html(full, figures, summary))
    atomic_write_bytes(paths["junit"], render_junit(full, summary))
    return paths
