"""The report's plots (runner/report.py's part): matplotlib figures, returned as PNG bytes.

Throughput vs batch size (per run and scope, each point's 95% interval as an error bar, an
unstable point ringed), latency per sample (one horizontal row per run and batch size) and
accuracy vs throughput (one point per run, when a run is not fp32). matplotlib is imported only
when a figure is drawn.
"""
from __future__ import annotations

import io

from runner.report_data import (
    UNSTABLE,
    UNSTABLE_MARK,
    _best_infer,
    _fp32_runs,
    _mark,
    _p50,
    _quality,
    _quality_delta,
    _uncertainty,
)
from zoo.runtimes import PRECISIONS

# each of the registry's precisions (zoo.runtimes) with its plot marker
PRECISION_MARKERS = dict(zip(PRECISIONS, "osD^"))


def _new_axes(width: float = 7, height: float = 4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig) -> bytes | None:
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _yerr(points) -> list[list[float]] | None:
    """Error bars [below, above] from (x, y, low, high) points; 0 where a point has no interval."""
    if not any(lo is not None or hi is not None for _, _, lo, hi in points):
        return None
    return [[max(0.0, y - lo) if lo is not None else 0.0 for _, y, lo, _ in points],
            [max(0.0, hi - y) if hi is not None else 0.0 for _, y, _, hi in points]]


def _plot(runs, labels, title: str) -> bytes | None:
    return _png(_throughput_figure(runs, labels, title))


def _throughput_figure(runs, labels, title: str):
    """Throughput against batch size per run and scope, each point's 95% interval as an error bar;
    a point whose interval is not stable is ringed (one legend entry says UNSTABLE: rings, unlike
    a word at each point, do not pile up where several runs' points meet)."""
    from matplotlib.ticker import NullLocator

    fig, ax = _new_axes(8, 4.5)
    ticks, unstable = set(), []
    for i, (run, label) in enumerate(zip(runs, labels)):
        for scope, style, marker in (("infer_only", "-", "o"), ("pipeline", "--", "s")):
            blocks = sorted((p for p in run["perf"]
                             if p["scope"] == scope and p["status"] == "ok" and "throughput" in p),
                            key=lambda p: p["batch_size"])
            if not blocks:
                continue
            pts = [(p["batch_size"], p["throughput"], _uncertainty(p)["low"], _uncertainty(p)["high"]) for p in blocks]
            ticks.update(bs for bs, *_ in pts)
            ax.plot([x for x, *_ in pts], [y for _, y, *_ in pts], linestyle=style, marker=marker,
                    color=f"C{i % 10}", label=f"{label}, {scope.replace('_', ' ')}")
            yerr = _yerr(pts)
            if yerr:
                ax.errorbar([x for x, *_ in pts], [y for _, y, *_ in pts], yerr=yerr, fmt="none",
                            ecolor=f"C{i % 10}", capsize=3)
            unstable += [(p["batch_size"], p["throughput"]) for p in blocks if _uncertainty(p)["stable"] is False]
    if not ticks:
        return None
    if unstable:
        ax.plot([x for x, _ in unstable], [y for _, y in unstable], linestyle="none", marker="o", markersize=13,
                markerfacecolor="none", markeredgecolor="#b35c00", markeredgewidth=1.5,
                label=f"{UNSTABLE} (ringed): interval not within its tolerance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(bottom=0)
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput [samples/s]")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    return fig


def _latency_plot(runs, labels, title: str) -> bytes | None:
    return _png(_latency_figure(runs, labels, title))


def _latency_figure(runs, labels, title: str):
    """Latency per sample (a call's latency over its batch size, as in the tables' ms/sample
    columns), infer only: one horizontal row per run and batch size, labelled `<run label>, bs N`
    (UNSTABLE after it when that throughput's interval is not stable): the min-max range as a line,
    p50 / p90 / p99 as markers, the axis from 0."""
    rows = []
    for i, (run, label) in enumerate(zip(runs, labels)):
        for p in sorted((p for p in run["perf"] if p["scope"] == "infer_only" and p["status"] == "ok"),
                        key=lambda p: p["batch_size"]):
            lat = p.get("latency_ms") or {}
            if _p50(lat) is None:
                continue
            bs = p["batch_size"]
            unstable = _uncertainty(p)["stable"] is False
            rows.append((f"{label}, bs {bs}" + (UNSTABLE_MARK if unstable else ""), f"C{i % 10}",
                         {k: lat[k] / bs for k in ("min", "max", "p90", "p99") if lat.get(k) is not None}
                         | {"p50": _p50(lat) / bs}))
    if not rows:
        return None
    from matplotlib.lines import Line2D

    markers = (("p50", "o"), ("p90", "s"), ("p99", "D"))
    fig, ax = _new_axes(8, 1.4 + 0.3 * len(rows))
    for y, (_, color, lat) in enumerate(rows):
        if "min" in lat and "max" in lat:
            ax.hlines(y, lat["min"], lat["max"], color=color, linewidth=2, alpha=0.6)
        for key, marker in markers:
            if key in lat:
                ax.plot([lat[key]], [y], marker=marker, color=color, linestyle="none", markersize=5,
                        markerfacecolor=color if key == "p50" else "white")
    grey = "0.35"  # the legend's keys in no run's colour
    keys = [Line2D([], [], color=grey, linewidth=2, alpha=0.6, label="min-max")] + [
        Line2D([], [], marker=m, color=grey, linestyle="none", markersize=5,
               markerfacecolor=grey if k == "p50" else "white", label=k) for k, m in markers]
    ax.set_yticks(range(len(rows)), [text for text, *_ in rows], fontsize="small")
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the first run on top
    ax.set_xlim(left=0)
    ax.set_xlabel("latency per sample [ms] (one call's latency / batch size)")
    ax.set_title(title, pad=24)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(handles=keys, fontsize="small", loc="lower left", bbox_to_anchor=(0, 1.0), ncol=4, frameon=False,
              borderaxespad=0.2)
    return fig


def _precision_plot(runs, labels, title: str) -> bytes | None:
    return _png(_precision_figure(runs, labels, title))


def _precision_figure(runs, labels, title: str):
    """Accuracy (or, when a run judged itself by fidelity -- no trained weights -- the fidelity to
    fp32) against the infer-only throughput at the best batch size: one point per run (colour: the
    runtime, marker: the precision), its 95% interval as a horizontal bar; the legend names each
    point by its run label with the batch size, the value and its delta to fp32 (UNSTABLE when the
    throughput's interval is not). The y axis does not exaggerate: it spans the points and the
    published reference (dashed) with a margin of 3 points below and 1 above (0.03 and 0.01 of a
    fraction). None when every run is fp32."""
    if all(r["precision"] == "fp32" for r in runs):
        return None
    fidelity = any((r.get("reduced_precision") or {}).get("criterion") == "fidelity_to_fp32" for r in runs)
    fp32 = _fp32_runs(runs)
    runtimes = sorted({r["runtime"]["name"] for r in runs})
    points = []
    for run, label in zip(runs, labels):
        best, y = _best_infer(run), _quality(run, fidelity)
        if best is None or y is None:
            continue
        delta = _quality_delta(run, fp32.get((run["runtime"]["name"], run["device"]["type"])), fidelity)
        u = _uncertainty(best)
        text = (f"{label} (bs {best['batch_size']}): {y:.4f}" + (f", {delta:+.4f} vs fp32" if delta is not None else "")
                + _mark(u["stable"]))
        points.append((run, best["throughput"], y, u, text))
    if not points:
        return None
    fig, ax = _new_axes(8, 4.5)
    for run, x, y, u, text in points:
        color = f"C{runtimes.index(run['runtime']['name']) % 10}"
        marker = PRECISION_MARKERS.get(run["precision"], "x")
        ax.plot([x], [y], marker=marker, color=color, linestyle="none", markersize=7, label=text)
        xerr = _yerr([(x, x, u["low"], u["high"])])
        if xerr:
            ax.errorbar([x], [y], xerr=xerr, fmt="none", ecolor=color, capsize=3)
    ys = [y for _, _, y, _, _ in points]
    metric = runs[0]["accuracy"][0] if runs[0]["accuracy"] else {}
    published = None if fidelity else (metric.get("reference") or {}).get("value")
    if published is not None:
        ax.axhline(published, color="0.4", linestyle="--", linewidth=1, label=f"published {published:.4f}")
        ys.append(published)
    margin = 0.03 if max(ys) <= 1.0 else 3.0  # a fraction, or a percentage
    ax.set_ylim(min(ys) - margin, max(ys) + margin / 3)
    ax.set_xlim(left=0, right=1.15 * max(x + ((u["high"] or x) - x) for _, x, _, u, _ in points))
    ax.set_xlabel("throughput at the best batch size, infer only [samples/s]")
    ax.set_ylabel("fidelity to fp32 predictions" if fidelity
                  else f"{metric.get('name', '')} {metric.get('metric', 'accuracy')}".strip())
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    return fig
