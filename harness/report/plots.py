"""Report figures as PNG bytes (matplotlib's Agg canvas, no pyplot global state).

Each function takes plain arrays/lists and returns the encoded PNG, so figures can be embedded
in the HTML page (base64) and written beside claims.json.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.errors import UserError


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def relative_edge_change(base: np.ndarray, post: np.ndarray) -> np.ndarray:
    """(post - base) / base per edge; NaN where base is 0 (structural zeros, no edge)."""
    base = np.asarray(base, dtype=np.float64)
    post = np.asarray(post, dtype=np.float64)
    if base.shape != post.shape or base.ndim != 2:
        raise UserError(f"heatmap needs two matrices of the same 2-D shape, got {base.shape} and {post.shape}")
    out = np.full(base.shape, np.nan)
    np.divide(post - base, base, out=out, where=base != 0)
    return out


def edge_change_heatmap(base_mean_abs: np.ndarray, post_mean_abs: np.ndarray,
                        src_names: Sequence[str], dst_names: Sequence[str], title: str) -> bytes:
    """Fig. 2 analogue: relative change of mean |W| per edge, sources (rows) x destinations (cols).

    base_mean_abs, post_mean_abs: [n_src, n_dst] mean |W| over samples. Non-edges stay blank.
    The colour scale is symmetric and clipped at the 98th percentile of |change|.
    """
    change = relative_edge_change(base_mean_abs, post_mean_abs)
    n_src, n_dst = change.shape
    if len(src_names) != n_src or len(dst_names) != n_dst:
        raise UserError(f"heatmap names ({len(src_names)} sources, {len(dst_names)} destinations) "
                        f"do not match the matrix shape {change.shape}")
    finite = np.abs(change[np.isfinite(change)])
    limit = float(np.percentile(finite, 98)) if finite.size else 1.0
    limit = limit if limit > 0 else 1.0
    width = min(4 + 0.12 * n_dst, 18)
    height = min(3 + 0.12 * n_src, 14)
    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(change), cmap="RdBu_r", vmin=-limit, vmax=limit,
                      aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="(post − base) / base of mean |W|")
    step_src = max(1, n_src // 40)
    step_dst = max(1, n_dst // 60)
    ax.set_yticks(range(0, n_src, step_src), [src_names[i] for i in range(0, n_src, step_src)], fontsize=6)
    ax.set_xticks(range(0, n_dst, step_dst), [dst_names[i] for i in range(0, n_dst, step_dst)],
                  fontsize=6, rotation=90)
    ax.set_ylabel("source (output node)")
    ax.set_xlabel("destination (input node)")
    ax.set_title(title)
    return _png(fig)


def diversity_scatter(labels: Sequence[str], base: Sequence[float], post: Sequence[float],
                      title: str = "Inter-sample diversity, base vs post-trained") -> bytes:
    """Fig. 3a analogue: one point per experiment; points above y = x rose after post-training."""
    base_arr = np.asarray(base, dtype=np.float64)
    post_arr = np.asarray(post, dtype=np.float64)
    if not (len(labels) == base_arr.size == post_arr.size) or base_arr.size == 0:
        raise UserError("diversity scatter needs equally many labels, base and post values (at least one)")
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    rose = post_arr > base_arr
    ax.scatter(base_arr[rose], post_arr[rose], color="#1a7f37", label="rose")
    ax.scatter(base_arr[~rose], post_arr[~rose], color="#cf222e", label="did not rise")
    low = float(min(base_arr.min(), post_arr.min()))
    high = float(max(base_arr.max(), post_arr.max()))
    pad = (high - low) * 0.05 or 0.01
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="grey", linestyle="--", linewidth=1)
    if base_arr.size <= 20:
        for label, x, y in zip(labels, base_arr, post_arr):
            ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("base")
    ax.set_ylabel("post-trained")
    ax.set_title(f"{title}\n{int(rose.sum())}/{rose.size} experiments rose")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def node_entropy_bars(node_names: Sequence[str], base: Sequence[float], post: Sequence[float],
                      title: str) -> bytes:
    """Fig. 3b analogue: relative change (%) of each source node's output-edge entropy.

    The absolute base entropy is printed over each bar, so large percentages on near-zero
    baselines are visible as such.
    """
    base_arr = np.asarray(base, dtype=np.float64)
    post_arr = np.asarray(post, dtype=np.float64)
    if not (len(node_names) == base_arr.size == post_arr.size) or base_arr.size == 0:
        raise UserError("node entropy bars need equally many names, base and post values (at least one)")
    change = np.full(base_arr.shape, np.nan)
    np.divide(post_arr - base_arr, base_arr, out=change, where=base_arr != 0)
    change *= 100
    fig = Figure(figsize=(min(4 + 0.25 * base_arr.size, 18), 4))
    ax = fig.add_subplot()
    colours = ["#1a7f37" if c > 0 else "#cf222e" for c in np.nan_to_num(change)]
    positions = np.arange(base_arr.size)
    ax.bar(positions, np.nan_to_num(change), color=colours)
    if base_arr.size <= 40:
        for x, (c, b) in enumerate(zip(np.nan_to_num(change), base_arr)):
            ax.annotate(f"{b:.2g}", (x, c), fontsize=5, ha="center",
                        va="bottom" if c >= 0 else "top")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(positions, list(node_names), rotation=90, fontsize=6)
    ax.set_ylabel("entropy change, % of base (labels: base entropy, nats)")
    ax.set_title(title)
    return _png(fig)


def metric_vs_alpha(series: dict[str, Sequence[tuple[float, float, float | None, float | None]]],
                    metric: str, title: str) -> bytes:
    """Effect (post − base) against alpha with CI error bars, one line per series.

    series: label -> [(alpha, effect, ci_low, ci_high)]; missing CI bounds draw no bar.
    """
    if not series:
        raise UserError("metric-vs-alpha plot needs at least one series")
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    for label, points in sorted(series.items()):
        points = sorted(points)
        alphas = np.array([p[0] for p in points])
        effects = np.array([p[1] for p in points])
        lower = np.array([p[1] - p[2] if p[2] is not None else 0.0 for p in points])
        upper = np.array([p[3] - p[1] if p[3] is not None else 0.0 for p in points])
        ax.errorbar(alphas, effects, yerr=np.vstack([np.clip(lower, 0, None), np.clip(upper, 0, None)]),
                    marker="o", capsize=3, label=label)
    ax.axhline(0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ticks = sorted({p[0] for points in series.values() for p in points})
    ax.set_xticks(ticks, [f"{a:g}" for a in ticks])
    ax.minorticks_off()
    ax.set_xlabel("α (share of mean answer length kept, log scale)")
    ax.set_ylabel(f"{metric}: post − base (CI)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _png(fig)


def forest(rows: Sequence[dict], title: str, xlabel: str) -> bytes:
    """A forest plot: one row per run (or seed control, shaded grey) with its effect and CI, and a diamond
    per pooled estimate. rows: {label, effect, ci: [lo, hi], kind: run | control | pooled}, top to bottom."""
    if not rows:
        raise UserError("a forest plot needs at least one row")
    fig = Figure(figsize=(7.5, 0.9 + 0.32 * len(rows)))
    ax = fig.add_subplot()
    for y, row in enumerate(reversed(rows)):
        lo, hi = row["ci"]
        if row["kind"] == "control":
            ax.axhspan(y - 0.5, y + 0.5, color="#eeeeee", zorder=0)
        if row["kind"] == "pooled":
            if lo is not None and hi is not None:
                ax.fill([lo, row["effect"], hi, row["effect"]], [y, y + 0.3, y, y - 0.3], color="#444444")
            continue
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [y, y], color="#555555", linewidth=1.2)
        ax.plot([row["effect"]], [y], "s" if row["kind"] == "run" else "o",
                color="#0969da" if row["kind"] == "run" else "#6e7781")
    ax.axvline(0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(rows)), [r["label"] for r in reversed(rows)], fontsize=7)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def metric_accuracy_scatter(points: Sequence[dict], title: str, metric: str) -> bytes:
    """Each run and dataset: accuracy change (x, points) against the metric's relative change (y)."""
    if not points:
        raise UserError("a metric-vs-accuracy plot needs at least one point")
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for p in points:
        ax.plot(100 * p["accuracy_change"], p["metric_change"], "o", color="#0969da")
        ax.annotate(f"{p['pair']} · {p['dataset']}", (100 * p["accuracy_change"], p["metric_change"]), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="grey", linewidth=0.8, linestyle="--")
    ax.axvline(0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("accuracy change post − base (points)")
    ax.set_ylabel(f"{metric}: relative change post − base")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def fidelity_scatter(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str) -> bytes:
    """PNG of EAP score against exact delta, one point per (sample, edge), with the y = x line.
    series: {label: (eap_scores, exact_deltas)}, e.g. one series per model."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    values = []
    for label, (est, exact) in series.items():
        ax.scatter(exact, est, s=8, alpha=0.6, label=label)
        values += list(est) + list(exact)
    low, high = min(values), max(values)
    ax.plot([low, high], [low, high], color="grey", linewidth=1)
    ax.set_xlabel("exact ablation ΔL (nats)")
    ax.set_ylabel("EAP score (nats)")
    ax.set_title(title, fontsize=9)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def causal_check_png(check: dict, title: str) -> bytes:
    """C8's causal check: the loss increase (nats, mean over questions, with their range) when EAP's top
    k, exact ablation's top k and k random pool edges are removed together. check: TopKCheck fields."""
    ks, clean = check["ks"], np.asarray(check["loss_clean"], dtype=float)
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for name, style, label in (("exact", "^-", "exact's top k"), ("eap", "o-", "EAP's top k"),
                               ("random", "s--", "k random")):
        rise = np.asarray(check[f"question_loss_{name}"], dtype=float) - clean     # [K, n]
        mean = rise.mean(1)
        ax.errorbar(ks, mean, yerr=[mean - rise.min(1), rise.max(1) - mean], fmt=style, capsize=3, label=label)
    ax.axhline(0, color="grey", linewidth=1)
    ax.set(xscale="log", xlabel=f"k edges removed (of a pool of {len(check['edges'])})",
           ylabel="loss increase (nats)")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def intervention_curve_png(curve: list[dict], part: str, title: str) -> bytes:
    """CB1-CB3: per k, the effect of the chosen edges and of k magnitude-matched random edges (mean over
    questions, bars: percentile bootstrap interval); curve: rows of harness.audit.claims.intervention.curve_rows."""
    ks = [row["k"] for row in curve]
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    chosen = "largest |EAP change|" if part != "necessity" else "largest |EAP|"
    for name, style, label in (("top", "o-", f"k edges of {chosen}"), ("matched", "s--", "k matched random edges")):
        mean = np.array([row[name] for row in curve])
        low = np.array([row[f"{name}_ci"][0] for row in curve])
        high = np.array([row[f"{name}_ci"][1] for row in curve])
        ax.errorbar(ks, mean, yerr=[mean - low, high - mean], fmt=style, capsize=3, label=label)
    ax.axhline(0, color="grey", linewidth=1)
    ylabel = {"restore": "log p(solution): toward the base (nats)",
              "install": "log p(solution): toward the post (nats)",
              "necessity": "drop in log p(solution) (nats)"}[part]
    ax.set(xscale="log", xlabel="k edges " + ("zero-ablated" if part == "necessity" else "patched"), ylabel=ylabel)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def edges_behaviour_scatter(rows: Sequence[dict]) -> bytes:
    """Per run, dataset and k: the share of the behaviour gap the restored (installed) edges move against
    their share of the intensity change; rows: harness.audit.behaviour.edges_and_behaviour's."""
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.subplots()
    for part, marker in (("restore", "o"), ("install", "^")):
        points = [(r["change_share"], r[part]["recovered_share"], f"{r['pair']} {r['dataset']} k={r['k']}")
                  for r in rows if r.get(part) and r[part]["recovered_share"] is not None and r["change_share"] is not None]
        if points:
            ax.scatter([x for x, _, _ in points], [y for _, y, _ in points], marker=marker, label=part)
            for x, y, label in points:
                ax.annotate(label, (x, y), fontsize=6, alpha=0.7)
    ax.axhline(0, color="grey", linewidth=1)
    ax.axline((0, 0), slope=1, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="chosen edges' share of the intensity change", ylabel="share of the behaviour gap moved")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)
