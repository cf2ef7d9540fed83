"""Latency statistics and the uncertainty of a throughput: every sample kept, nothing clipped.

A throughput is measured in windows (perf_analyzer, trtexec and LoadGen all do): consecutive
groups of timed calls. `interval` turns the windows into a 95% confidence interval of the
throughput: Student's t over the windows' mean time per sample (the windows are the repeated
measurements; calls inside one window are not independent enough to count one by one), carried
over to samples/s. A figure whose relative half-width is above the tolerance, or with fewer than
MIN_WINDOWS windows, is unstable, and says why."""
from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95
MIN_WINDOWS = 3
METHOD = "student-t over window means"


def summarize(samples_ms) -> dict:
    """count, min, max, mean, median (= p50), p90, p99, std (population) of latencies in ms.

    Percentiles use linear interpolation between closest ranks (numpy's default)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latency samples")
    median = float(np.percentile(a, 50))
    return {
        "count": int(a.size),
        "min": float(a.min()),
        "max": float(a.max()),
        "mean": float(a.mean()),
        "median": median,
        "p50": median,
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "std": float(a.std()),
    }


def per_sample(latency_ms: dict, batch_size: int) -> dict:
    """A batch's latency summary as per-sample figures (p50, p90, p99, mean divided by the batch)."""
    return {k: latency_ms[k if k != "p50" else "median"] / batch_size for k in ("p50", "p90", "p99", "mean")}


def throughput(batch_size: int, mean_ms: float) -> float:
    """Samples per second from the mean latency of one batch: 1000 * batch / mean_ms."""
    return 1000.0 * batch_size / mean_ms


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The two-sided Student-t quantile for `df` degrees of freedom (scipy)."""
    from scipy.stats import t
    return float(t.ppf(0.5 + confidence / 2, df))


def half_width(values) -> float | None:
    """The half-width of the 95% interval (Student t) of the mean of `values`, None below MIN_WINDOWS."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < MIN_WINDOWS:
        return None
    return t_quantile(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)


def relative_half_width(values) -> float | None:
    """The relative half-width of the 95% interval of the mean of `values` (None below MIN_WINDOWS)."""
    half = half_width(values)
    mean = float(np.mean(values)) if half is not None else 0.0
    return half / mean if half is not None and mean > 0 else None


def _block(method: str, window_calls: int, rates: list[float], figure: float, half: float | None,
           tolerance: float, why: str | None) -> dict:
    """An `interval` block: the throughput interval figure / (1 +- half), stable when `half` is
    within `tolerance`; `why` (the unstable reason) only when it is not."""
    stable = half is not None and half <= tolerance
    return {"method": method, "confidence": CONFIDENCE, "window_calls": window_calls, "windows": len(rates),
            "window_throughputs": rates, "median": float(np.median(rates)) if rates else None,
            "low": figure / (1 + half) if half is not None else None,
            "high": figure / (1 - half) if half is not None and half < 1 else None,
            "half_width": half, "tolerance": tolerance, "stable": stable, "reason": None if stable else why}


def interval(windows: list[tuple[int, float]], figure: float, tolerance: float, window_calls: int,
             reason: str | None = None) -> dict:
    """The perf block's `interval`: `windows` are (samples, seconds) of each complete window,
    `figure` the block's throughput (samples/s), `tolerance` the target relative half-width.
    The half-width is the t-interval of the windows' mean seconds per sample, relative; the
    throughput interval is figure / (1 +- half-width). `reason` overrides the unstable reason
    (e.g. what stopped the measurement)."""
    per = [s / n for n, s in windows if n > 0 and s > 0]
    rates = [n / s for n, s in windows if n > 0 and s > 0]
    half = relative_half_width(per)
    if half is None:
        why = f"{len(per)} window{'s' if len(per) != 1 else ''}: too few for an interval (at least {MIN_WINDOWS})"
    else:
        why = (reason + ": " if reason else "") + f"+-{half:.1%} above the tolerance +-{tolerance:.1%}"
    return _block(METHOD, window_calls, rates, figure, half, tolerance, why)


def figure(value: float | None, half_width: float | None = None, stable: bool | None = None, *,
           windows: int | None = None, digits: int = 1, unit: str = "") -> str:
    """The one text of a figure with its uncertainty, everywhere (terminal, tables, report, docs):
    '41.2 ±1.1%', '6.4 ±12.2% UNSTABLE', '6.4 ±? UNSTABLE' (too few windows for an interval:
    `windows` says how many, '6.4 ±? (2 windows) UNSTABLE'), '6.4' (a figure recorded without any
    uncertainty, a record before schema 1.11 without windows). `unit` follows the number ('/s')."""
    if value is None:
        return "-"
    text = f"{value:.{digits}f}{unit}"
    if half_width is None and stable is None:
        return text
    if half_width is None:
        many = "" if windows is None else f" ({windows} window{'' if windows == 1 else 's'})"
        return f"{text} ±?{many} UNSTABLE"
    return f"{text} ±{half_width:.1%}" + ("" if stable else " UNSTABLE")


def block_figure(block: dict, digits: int = 1, unit: str = "") -> str:
    """figure() of a perf block's throughput and its `interval` (schema 1.11) if it has one."""
    iv = block.get("interval")
    if not iv:
        return figure(block.get("throughput"), digits=digits, unit=unit)
    return figure(block.get("throughput"), iv.get("half_width"), bool(iv.get("stable")), windows=iv.get("windows"),
                  digits=digits, unit=unit)


def shown(block: dict) -> str:
    """A perf block's throughput with its uncertainty, for a terminal line: block_figure with the
    unit, '41.2/s ±1.1%', '41.2/s ±7.1% UNSTABLE', '41.2/s ±? (2 windows) UNSTABLE'."""
    return block_figure(block, unit="/s")


def summed_interval(intervals: list[dict], figures: list[float], figure: float, tolerance: float) -> dict:
    """The interval of concurrent parts' summed throughput (shards timed at the same time): the
    parts' absolute half-widths added in quadrature (independent parts), relative to the sum of
    their figures and carried to `figure` (the aggregate's own throughput); window throughputs
    are the parts' k-th windows added, over the windows every part has."""
    halves = [iv.get("half_width") for iv in intervals]
    count = min((iv["windows"] for iv in intervals), default=0)
    rates = [sum(iv["window_throughputs"][k] for iv in intervals) for k in range(count)]
    half = None
    if intervals and all(h is not None for h in halves) and sum(figures) > 0:
        half = math.sqrt(sum((h * f) ** 2 for h, f in zip(halves, figures))) / sum(figures)
    why = ("a part has no interval (too few windows)" if half is None
           else f"+-{half:.1%} above the tolerance +-{tolerance:.1%}")
    return _block(f"sum of {len(intervals)} concurrent parts; their half-widths added in quadrature",
                  intervals[0]["window_calls"] if intervals else 1, rates, figure, half, tolerance, why)
