"""Interleaved A/B timing (zoo.pipeline.interleaved), its verdict (zoo.ab) and the runtime
plug point (ZOO_RUNTIME_PLUGINS)."""
from __future__ import annotations

import math

import pytest

from zoo.ab import check, side, verdict
from zoo.errors import ZooError
from zoo.pipeline import Stability, interleaved
from zoo.stages.config import RunConfig

from tests.core.test_core_pipeline import FakeClock as Clock


class Fake:
    """A runtime whose call takes `ms` of fake time, times (1 + drift) per call made on the clock."""

    def __init__(self, clock, ms, drift=None):
        self.clock, self.ms, self.drift, self.calls = clock, ms, drift, 0

    def infer(self, feeds):
        factor = 1.0 if self.drift is None else 1 + self.drift["per_call"] * self.drift["n"]
        self.clock.ns += int(self.ms * factor * 1e6)
        if self.drift is not None:
            self.drift["n"] += 1
        self.calls += 1
        return {}


def _ab(a_ms, b_ms, drift=None, tolerance=0.02, budget=100.0, **kw):
    clock = Clock()
    a, b = Fake(clock, a_ms, drift), Fake(clock, b_ms, drift)
    st = Stability(window=2, windows=3, tolerance=tolerance, min_duration_s=0)
    return interleaved(a, {}, b, {}, 1, 0, st, budget, clock=clock, window_s=0, **kw), a, b


def test_a_planted_ten_percent_slowdown_is_measured_as_such():
    res, a, b = _ab(10.0, 11.0)
    assert res["ratio"] == pytest.approx(10 / 11) and res["stable"] and res["rounds"] == 3
    assert res["stopped_by"] == "stable" and a.calls == b.calls == 6
    assert res["a"]["throughput"] == pytest.approx(100) and res["b"]["throughput"] == pytest.approx(1000 / 11)
    assert verdict(res["ratio"], res["low"], res["high"], 0.02) == "slower"


def test_abba_order_cancels_a_linear_drift():
    # every call 0.5% slower than the one before: A-then-B every round would make B about 1% slower
    drift = {"per_call": 0.005, "n": 0}
    res, _, _ = _ab(10.0, 10.0, drift=drift, tolerance=0.5, max_rounds=8, budget=1e9)
    assert abs(res["ratio"] - 1) < 0.004 and verdict(res["ratio"], res["low"], res["high"], 0.02) == \
        "no significant change"


def test_an_unstable_ab_says_why():
    clock = Clock()
    lat = iter([10, 10, 30, 30, 10, 10, 12, 12] * 20)

    class Noisy(Fake):
        def infer(self, feeds):
            self.clock.ns += int(next(lat) * 1e6)
            return {}
    st = Stability(window=2, windows=3, tolerance=0.02, min_duration_s=0)
    res = interleaved(Noisy(clock, 0), {}, Noisy(clock, 0), {}, 1, 0, st, 1e9, max_rounds=5, clock=clock, window_s=0)
    assert res["stable"] is False and res["rounds"] == 5 and res["stopped_by"] == "iterations"
    assert res["reason"].startswith("stopped at 5 rounds: +-") and res["low"] < res["ratio"] < res["high"]
    # the interval is Student's t over the rounds' log ratios
    # rounds: A 10+10 then B 30+30 (B at a third of A's rate), then B 10+10 then A 12+12 (B 1.2x), ...
    logs = [math.log(1 / 3), math.log(1.2), math.log(1 / 3), math.log(1.2), math.log(1 / 3)]
    mean = sum(logs) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / 4)
    assert res["ratio"] == pytest.approx(math.exp(mean))
    assert res["high"] == pytest.approx(math.exp(mean + 2.776445 * sd / math.sqrt(5)), rel=1e-5)


@pytest.mark.parametrize("ratio,low,high,expected", [
    (0.90, 0.88, 0.92, "slower"), (1.10, 1.08, 1.12, "faster"),
    (0.99, 0.985, 0.995, "no significant change"),   # significant, but within the 2% floor
    (0.90, 0.80, 1.01, "no significant change"),     # the interval includes 1
    (0.90, None, None, "no significant change"),
])
def test_verdict(ratio, low, high, expected):
    assert verdict(ratio, low, high, 0.02) == expected


def test_windows_last_about_window_s_from_the_last_warm_up_call():
    clock = Clock()
    a, b = Fake(clock, 10.0), Fake(clock, 40.0)
    st = Stability(window=2, windows=3, tolerance=0.02, min_duration_s=0)
    res = interleaved(a, {}, b, {}, 1, 1, st, 1e9, clock=clock, window_s=0.2)
    assert res["a"]["window_calls"] == 20 and res["b"]["window_calls"] == 5  # 0.2 s of 10 ms and 40 ms calls
    assert res["ratio"] == pytest.approx(0.25) and res["a"]["window_throughputs"][0] == pytest.approx(100)


def test_sides_and_options_checked():
    assert side("openvino:int8") == ("openvino", "int8") and side("onnxruntime") == ("onnxruntime", "fp32")
    with pytest.raises(ZooError, match="RUNTIME"):
        side(":int8")
    cfg = RunConfig(model="unetpp")
    with pytest.raises(ZooError, match="ab times one batch size"):
        check(RunConfig(model="unetpp", batch_sizes=[1, 4]), "a", "b", 0.02, None)
    with pytest.raises(ZooError, match="--fail-slower must be >= 0 and < 1"):
        check(cfg, "a", "b", 0.02, 1.5)
    with pytest.raises(ZooError, match="--expect must be one of faster, slower, same"):
        check(cfg, "a", "b", 0.02, None, "quicker")
    with pytest.raises(ZooError, match="--isolate does not apply to ab"):
        check(RunConfig(model="unetpp", isolate=True), "a", "b", 0.02, None)


def test_runtime_plugins_register_and_bad_ones_are_one_line(tmp_path, monkeypatch):
    from zoo import runtimes
    good = tmp_path / "good.py"
    good.write_text("from zoo.runtimes.onnxruntime_rt import OnnxRuntime\n"
                    "class Mine(OnnxRuntime):\n    name = 'onnxruntime-mine'\nRUNTIMES = [Mine]\n")
    monkeypatch.setenv("ZOO_RUNTIME_PLUGINS", str(good))
    try:
        assert runtimes.get_runtime("onnxruntime-mine").name == "onnxruntime-mine"
    finally:
        runtimes.RUNTIMES.pop("onnxruntime-mine", None)
    for text, message in (("RUNTIMES = 3\n", "must define RUNTIMES"),
                          ("raise ValueError('boom')\n", r"cannot be loaded \(ValueError: boom\)"),
                          ("from zoo.runtimes.onnxruntime_rt import OnnxRuntime\n"
                           "class Dup(OnnxRuntime):\n    name = 'openvino'\nRUNTIMES = [Dup]\n", "already defined")):
        bad = tmp_path / f"bad{len(message)}.py"
        bad.write_text(text)
        monkeypatch.setenv("ZOO_RUNTIME_PLUGINS", str(bad))
        with pytest.raises(ZooError, match=message) as err:
            runtimes.get_runtime("onnxruntime")
        assert str(bad) in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv("ZOO_RUNTIME_PLUGINS", str(tmp_path / "absent.py"))
    with pytest.raises(ZooError, match="names no such file"):
        runtimes.get_runtime("onnxruntime")
