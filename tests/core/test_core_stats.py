"""zoo.stats against hand-computed values."""
import math

import pytest

from zoo.stats import summarize, throughput


def test_summarize_skewed_list_hand_computed():
    # sorted: 1 2 3 4 100 (given unsorted: the function must not rely on order)
    s = summarize([100, 3, 1, 4, 2])
    assert s["count"] == 5
    assert s["min"] == 1.0 and s["max"] == 100.0
    assert s["mean"] == pytest.approx(22.0)            # 110 / 5
    assert s["median"] == pytest.approx(3.0)           # rank 0.5*4 = 2 -> 3
    # linear interpolation: rank 0.9*(5-1) = 3.6 -> 4 + 0.6*(100-4) = 61.6
    assert s["p90"] == pytest.approx(61.6)
    # rank 0.99*4 = 3.96 -> 4 + 0.96*96 = 96.16
    assert s["p99"] == pytest.approx(96.16)
    # population std: deviations -21 -20 -19 -18 78; squares 441+400+361+324+6084 = 7610; /5 = 1522
    assert s["std"] == pytest.approx(math.sqrt(1522.0))
    assert s["std"] == pytest.approx(39.0128, abs=1e-4)
    assert set(s) == {"count", "min", "max", "mean", "median", "p50", "p90", "p99", "std"} and s["p50"] == s["median"]
    assert all(type(v) is float for k, v in s.items() if k != "count")
    assert type(s["count"]) is int


def test_summarize_two_samples_interpolates():
    s = summarize([10.0, 20.0])
    assert s["median"] == pytest.approx(15.0)     # rank 0.5 -> 10 + 0.5*10
    assert s["p90"] == pytest.approx(19.0)        # rank 0.9 -> 10 + 0.9*10
    assert s["p99"] == pytest.approx(19.9)
    assert s["std"] == pytest.approx(5.0)         # population (ddof=0), not 7.07 (ddof=1)


def test_summarize_single_sample():
    s = summarize([7.5])
    assert s == {"count": 1, "min": 7.5, "max": 7.5, "mean": 7.5, "median": 7.5, "p50": 7.5, "p90": 7.5,
                 "p99": 7.5, "std": 0.0}


def test_summarize_keeps_every_sample_no_clipping():
    # an outlier must move max, mean and p99 (nothing clipped or trimmed)
    base = [1.0] * 99
    s = summarize(base + [1000.0])
    assert s["max"] == 1000.0
    assert s["mean"] == pytest.approx((99 + 1000) / 100)
    # rank 0.99*99 = 98.01 -> 1 + 0.01*(1000-1) = 10.99
    assert s["p99"] == pytest.approx(10.99)


@pytest.mark.parametrize("empty", [[], ()])
def test_summarize_empty_raises(empty):
    with pytest.raises(ValueError, match="no latency samples"):
        summarize(empty)


def test_throughput():
    assert throughput(4, 22.0) == pytest.approx(4000.0 / 22.0)   # 181.818... samples/s
    assert throughput(1, 40.0) == pytest.approx(25.0)
    assert throughput(16, 570.0) == pytest.approx(28.0701754386)


def test_interval_of_windows_carried_to_the_throughput():
    from zoo.stats import interval
    # windows of 4 samples taking 0.10, 0.11, 0.09 s: 0.025 s/sample +- t(2) * 0.0025 / sqrt(3)
    iv = interval([(4, 0.10), (4, 0.11), (4, 0.09)], 40.0, 0.02, 4)
    half = 4.302653 * 0.0025 / math.sqrt(3) / 0.025
    assert iv["half_width"] == pytest.approx(half, rel=1e-5) and iv["stable"] is False
    assert iv["low"] == pytest.approx(40 / (1 + half)) and iv["high"] == pytest.approx(40 / (1 - half))
    assert iv["reason"] == f"+-{half:.1%} above the tolerance +-2.0%"
    assert iv["window_throughputs"] == pytest.approx([40, 4 / 0.11, 4 / 0.09]) and iv["median"] == pytest.approx(40)


def test_summed_interval_adds_concurrent_parts_in_quadrature():
    from zoo.stats import summed_interval
    a = {"half_width": 0.03, "windows": 3, "window_throughputs": [10, 11, 9], "window_calls": 5}
    b = {"half_width": 0.04, "windows": 4, "window_throughputs": [20, 21, 19, 20], "window_calls": 5}
    iv = summed_interval([a, b], [10, 20], 30.0, 0.05)
    assert iv["half_width"] == pytest.approx(math.sqrt(0.3 ** 2 + 0.8 ** 2) / 30)
    assert iv["windows"] == 3 and iv["window_throughputs"] == [30, 32, 28] and iv["stable"] is True
    none = summed_interval([a, {**b, "half_width": None}], [10, 20], 30.0, 0.05)
    assert none["half_width"] is None and none["stable"] is False and "no interval" in none["reason"]


def _block(tp: float, half, stable, windows: int = 5) -> dict:
    return {"batch_size": 1, "scope": "infer_only", "status": "ok", "throughput": tp, "wall_s": 1.0,
            "iterations": 20, "stopped_by": "time_budget",
            "latency_ms": {"median": 1000 / tp, "p90": 1000 / tp, "p99": 1000 / tp},
            "interval": {"half_width": half, "stable": stable, "windows": windows}}


@pytest.mark.parametrize("tp,half,stable,windows,text", [
    (41.23, 0.011, True, 5, "41.2 ±1.1%"),
    (6.4, 0.122, False, 9, "6.4 ±12.2% UNSTABLE"),
    (6.4, None, False, 2, "6.4 ±? (2 windows) UNSTABLE"),
])
def test_one_text_of_a_figure_everywhere(tp, half, stable, windows, text):
    """zoo.stats.figure is the one text of a figure with its uncertainty: the run's progress line
    (shown), the run summary, the bench table, invoke compare and the measured tables
    (benchmarks/performance.py) print the same text for the same perf block, at their precision."""
    from benchmarks.performance import with_interval
    from runner.compare import _with_noise
    from zoo.cli import _with_interval, bench_table
    from zoo.stats import block_figure, figure, shown
    from zoo.summary import perf_table
    block = _block(tp, half, stable, windows)
    assert block_figure(block) == figure(tp, half, stable, windows=windows) == text
    assert shown(block) == text.replace(" ", "/s ", 1)
    assert _with_interval(block) == text
    assert text in perf_table({"perf": [block]})
    assert text in bench_table([{"runtime": {"name": "torch"}, "precision": "fp32", "device": {}, "perf": [block]}])
    assert _with_noise(tp, half, not stable, windows) == figure(tp, half, stable, windows=windows, digits=2)
    row = {"throughput": tp, "half_width": half, "stable": stable, "windows": windows, "interval_from": "interval"}
    assert with_interval(row) == figure(tp, half, stable, windows=windows, digits=2 if tp < 10 else 1)


def test_a_figure_without_uncertainty_is_bare():
    from benchmarks.performance import with_interval
    from zoo.stats import block_figure, figure
    assert figure(25.0) == block_figure({"throughput": 25.0}) == "25.0" and figure(None) == "-"
    assert with_interval({"throughput": 25.0, "half_width": None, "stable": None, "windows": 0,
                          "interval_from": None}) == "25.0"
