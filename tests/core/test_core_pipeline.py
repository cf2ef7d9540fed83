"""zoo.pipeline: streaming pipeline over a Source through an adapter (order, batching, stages,
predictions, errors) and infer_only (iterations, time budget). The source and the adapter are small
real implementations of zoo.datasets.base.Source and zoo.adapter.ModelAdapter. Only counts and
fields are asserted, never timing values."""
import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.adapter import ModelAdapter
from zoo.datasets.base import Opened, Sample, Source
from zoo.errors import ZooError
from zoo.manifest import load_manifest
from zoo.metrics.binary import BinaryIoU
from zoo.pipeline import infer_only, run_pipeline
from zoo.runtimes import ModelArtifacts
from zoo.runtimes.torch_rt import TorchRuntime
from zoo.stats import throughput

IN, OUT = "x", "y"
STAGES = {"read", "preprocess", "infer", "postprocess"}


class ToySource(Source):
    """Sample i: a (2, 4, 4) image depending on i; label: a 4x4 mask depending on i."""
    family = "toy"

    def __init__(self, n=10, fail_on=None, slow_first=False):
        super().__init__(Opened(root=Path("/nonexistent"), split="toy", ids_file=None, builtin=True, limit=None,
                                expected=None), [f"s{i}" for i in range(n)])
        self.fail_on = fail_on
        self.slow_first = slow_first
        self.reads = []

    def read(self, sample_id):
        i = int(sample_id[1:])
        if sample_id == self.fail_on:
            raise ZooError(f"{sample_id}: unreadable sample")
        if self.slow_first:          # earlier samples finish later: order must still be kept
            time.sleep(0.002 * (len(self.ids) - i))
        self.reads.append(sample_id)
        image = np.arange(32, dtype=np.float32).reshape(2, 4, 4) + 100 * i
        return Sample(sample_id, image, (np.arange(16).reshape(4, 4) % (i + 2)) == 0, {"index": i})


class ToyAdapter(ModelAdapter):
    """Input: the image shifted by 0.1 * i; meta: the sample's id (postprocess gets its own back);
    prediction: the output row's sign as a mask, the row itself and the meta."""

    def __init__(self):
        manifest = load_manifest("unetpp")
        super().__init__(dataclasses.replace(manifest, name="toy", model={**manifest.model, "options": {}}))

    def build(self):
        raise NotImplementedError

    def load_weights(self, module, path):
        raise NotImplementedError

    def preprocess(self, sample):
        i = sample.info["index"]
        x = (sample.image - 100 * i - 8) / 8 + 0.1 * i     # channel 0: -1 .. 0.875, shifted by 0.1*i
        return x.astype(np.float32), sample.id

    def postprocess(self, output, meta):
        return {"mask": np.asarray(output)[0] > 0, "row": np.array(output), "meta": meta}

    def metrics(self, source):
        return [BinaryIoU("toy", "sign of channel 0", key="mask")]


class Recorder(torch.nn.Module):
    """Channel 0 * 2 - 0.3, recording the batch size of every call."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x):
        self.batches.append(int(x.shape[0]))
        return x[:, :1] * 2.0 - 0.3


ADAPTER = ToyAdapter()


def _expected(src, sample_id):
    s = src.read(sample_id)
    x, _ = ADAPTER.preprocess(s)
    return x[:1] * 2.0 - 0.3, ADAPTER.target(s)


@pytest.fixture
def runtime(restore_torch_threads):
    rt = TorchRuntime(threads=1)
    rt.compile(ModelArtifacts(None, [IN], [OUT], torch_module=Recorder()), None)
    rt.load()
    yield rt
    rt.close()


@pytest.mark.parametrize("workers,post_workers", [(1, 1), (3, 1), (1, 0)])
def test_run_pipeline_batches_order_and_predictions(runtime, workers, post_workers):
    src = ToySource(10, slow_first=workers > 1)
    seen = []
    metric = ADAPTER.metrics(src)[0]
    res = run_pipeline(runtime, src, ADAPTER, 4, IN, OUT, [metric], workers=workers,
                       on_prediction=lambda sid, p: seen.append((sid, p)), label="t", post_workers=post_workers)
    assert res["postprocess_workers"] == post_workers
    assert runtime.module.batches == [4, 4, 2]            # the last partial batch is run
    assert [sid for sid, _ in seen] == src.ids            # the source's order kept
    assert [p["meta"] for _, p in seen] == src.ids        # each row postprocessed with its own meta
    ref = ToySource(10)
    direct = BinaryIoU("toy", "", key="mask")
    for sid, p in seen:
        exp, t = _expected(ref, sid)
        np.testing.assert_allclose(p["row"], exp, rtol=1e-6)
        np.testing.assert_array_equal(p["mask"], exp[0] > 0)
        direct.update({"mask": exp[0] > 0}, t)
    assert metric.inter == direct.inter and metric.union == direct.union
    assert metric.compute() == direct.compute() and metric.compute()["num_samples"] == 10
    assert len(set(metric.inter)) > 1                     # the samples really differ

    assert res["num_samples"] == 10 and res["batch_size"] == 4
    assert res["scope"] == "pipeline" and res["status"] == "ok" and res["error"] is None
    assert res["stopped_by"] == "dataset_end" and res["workers"] == workers
    assert res["latency_ms"]["count"] == 3                # one latency per batch
    assert set(res["stages"]) == STAGES
    assert sum(s["share"] for s in res["stages"].values()) == pytest.approx(1.0, abs=1e-9)
    for name, st in res["stages"].items():
        assert 0 <= st["share"] <= 1 and st["total_s"] >= 0 and st["throughput"] >= 0
    assert res["stages"]["infer"]["latency_ms"]["count"] == 3
    assert res["stages"]["postprocess"]["latency_ms"]["count"] == 3
    assert "latency_ms" not in res["stages"]["read"]


def test_run_pipeline_batch_larger_than_a_subset(runtime):
    src = ToySource(10)
    part = src.subset(["s3", "s1", "s7"])
    got = []
    res = run_pipeline(runtime, part, ADAPTER, 8, IN, OUT, [], on_prediction=lambda sid, p: got.append((sid, p)))
    assert runtime.module.batches == [3]
    assert [sid for sid, _ in got] == ["s3", "s1", "s7"]
    assert sorted(src.reads) == ["s1", "s3", "s7"]        # only the subset was read
    for sid, p in got:
        np.testing.assert_allclose(p["row"], _expected(ToySource(10), sid)[0], rtol=1e-6)
        assert p["meta"] == sid
    assert res["num_samples"] == 3 and res["latency_ms"]["count"] == 1


def test_run_pipeline_batch_size_one(runtime):
    res = run_pipeline(runtime, ToySource(5), ADAPTER, 1, IN, OUT, [])
    assert runtime.module.batches == [1] * 5
    assert res["num_samples"] == 5 and res["latency_ms"]["count"] == 5


@pytest.mark.parametrize("workers", [1, 2])
def test_run_pipeline_read_error_propagates(runtime, workers):
    src = ToySource(10, fail_on="s6")
    with pytest.raises(ZooError, match="s6: unreadable sample"):
        run_pipeline(runtime, src, ADAPTER, 4, IN, OUT, [], workers=workers)
    assert runtime.module.batches == [4]                  # stopped at the batch holding s6


class NaNAt(Recorder):
    """Recorder whose output for the sample at index `at` of the source is NaN."""

    def __init__(self, at):
        super().__init__()
        self.at, self.seen = at, 0

    def forward(self, x):
        y = super().forward(x)
        if self.seen <= self.at < self.seen + len(y):
            y[self.at - self.seen, 0, 1, 2] = float("nan")
        self.seen += len(y)
        return y


def test_run_pipeline_non_finite_output_names_the_sample(restore_torch_threads):
    rt = TorchRuntime(threads=1)
    rt.compile(ModelArtifacts(None, [IN], [OUT], torch_module=NaNAt(6)), None)
    rt.load()
    got = []
    with pytest.raises(ZooError, match=r"t bs4: outputs of batch 1 \(samples 4\.\.7\): non-finite .* in sample 2 \(s6\)"):
        run_pipeline(rt, ToySource(10), ADAPTER, 4, IN, OUT, [], label="t", on_prediction=lambda sid, p: got.append(sid))
    assert got[:4] == ["s0", "s1", "s2", "s3"]
    assert not {"s4", "s5", "s6", "s7"} & set(got)        # nothing of the bad batch became a prediction
    rt.close()


class GatedRecorder(Recorder):
    """Signals each forward call's start, so a test can see what runs concurrently with it."""

    def __init__(self):
        super().__init__()
        self.started = [threading.Event() for _ in range(8)]

    def forward(self, x):
        self.started[len(self.batches)].set()
        return super().forward(x)


@pytest.mark.parametrize("post_workers", [1, 0])
def test_run_pipeline_postprocessing_overlaps_the_next_inference(restore_torch_threads, post_workers):
    """With a postprocessing worker, batch k's postprocessing is still running when batch k+1's
    inference starts (it waits for that start); on the inference thread it cannot be."""
    rt = TorchRuntime(threads=1)
    module = GatedRecorder()
    rt.compile(ModelArtifacts(None, [IN], [OUT], torch_module=module), None)
    rt.load()
    saw_next_start, calls = [], []

    def on_prediction(sid, prediction):
        calls.append(sid)
        k = (len(calls) - 1) // 4                         # the batch being postprocessed
        if len(calls) % 4 == 1 and k < 2:                 # its first sample; the last batch has no next
            # the next inference's start, seen from inside this batch's postprocessing
            saw_next_start.append(module.started[k + 1].wait(timeout=5 if post_workers else 0.05))

    res = run_pipeline(rt, ToySource(12), ADAPTER, 4, IN, OUT, [], on_prediction=on_prediction,
                       post_workers=post_workers)
    rt.close()
    assert module.batches == [4, 4, 4] and len(calls) == 12
    assert saw_next_start == ([True, True] if post_workers else [False, False])
    assert res["stages"]["postprocess"]["latency_ms"]["count"] == 3


def test_run_pipeline_postprocessing_error_propagates(runtime):
    def on_prediction(sid, prediction):
        if sid == "s5":
            raise ZooError("s5: label missing")

    with pytest.raises(ZooError, match="s5: label missing"):
        run_pipeline(runtime, ToySource(12), ADAPTER, 4, IN, OUT, [], on_prediction=on_prediction)
    with pytest.raises(ValueError, match="post_workers"):
        run_pipeline(runtime, ToySource(4), ADAPTER, 4, IN, OUT, [], post_workers=2)


def test_infer_only_iterations(runtime):
    feeds = {IN: np.zeros((3, 2, 4, 4), np.float32)}
    res = infer_only(runtime, feeds, 3, warmup=2, iterations=5, time_budget_s=None, input_desc="zeros")
    assert runtime.module.batches == [3] * 7              # 2 warm-up + 5 timed
    assert res["iterations"] == 5 and res["warmup"] == 2
    assert res["stopped_by"] == "iterations"
    assert res["num_samples"] == 15 and res["batch_size"] == 3
    assert res["scope"] == "infer_only" and res["status"] == "ok" and res["error"] is None
    assert res["input"] == "zeros"
    assert res["latency_ms"]["count"] == 5
    assert res["throughput"] == pytest.approx(throughput(3, res["latency_ms"]["mean"]))


def test_infer_only_generous_budget_stops_by_iterations(runtime):
    feeds = {IN: np.zeros((1, 2, 4, 4), np.float32)}
    res = infer_only(runtime, feeds, 1, warmup=0, iterations=3, time_budget_s=3600.0, input_desc="z")
    assert res["stopped_by"] == "iterations" and res["iterations"] == 3
    assert runtime.module.batches == [1, 1, 1]


def test_infer_only_exhausted_budget_stops_after_one_call(runtime):
    feeds = {IN: np.zeros((2, 2, 4, 4), np.float32)}
    res = infer_only(runtime, feeds, 2, warmup=1, iterations=50, time_budget_s=0.0, input_desc="z")
    assert res["stopped_by"] == "time_budget"
    assert res["iterations"] == 1 and res["latency_ms"]["count"] == 1 and res["num_samples"] == 2
    assert runtime.module.batches == [2, 2]               # warm-up is not limited by the budget


def test_infer_only_budget_reached_on_last_iteration_is_iterations(runtime):
    feeds = {IN: np.zeros((1, 2, 4, 4), np.float32)}
    res = infer_only(runtime, feeds, 1, warmup=0, iterations=1, time_budget_s=0.0, input_desc="z")
    assert res["stopped_by"] == "iterations" and res["iterations"] == 1


# ---------------------------------------------------------------- stop-when-stable (fake clock)

class FakeClock:
    """Nanoseconds that advance only when the fake runtime 'runs' for its next latency."""

    def __init__(self):
        self.ns = 0

    def __call__(self):
        return self.ns


class FakeRuntime:
    def __init__(self, clock, latencies_ms):
        self.clock, self.lat, self.calls = clock, list(latencies_ms), 0

    def infer(self, feeds):
        self.clock.ns += int(self.lat[min(self.calls, len(self.lat) - 1)] * 1e6)
        self.calls += 1
        return {}


def _timed(latencies, **kw):
    from zoo.pipeline import Stability
    clock = FakeClock()
    rt = FakeRuntime(clock, latencies)
    args = dict(warmup=0, iterations=100, time_budget_s=None, input_desc="z", clock=clock,
                stability=Stability(window=2, windows=3, tolerance=0.05, min_duration_s=0))
    args.update(kw)
    return infer_only(rt, {}, 1, **args), rt


def test_half_width_is_the_t_interval_of_the_window_means():
    from zoo.stats import relative_half_width
    # mean 10, sample sd 0.2, t(0.975, 2 df) = 4.3027: 4.3027 * 0.2 / sqrt(3) / 10
    assert relative_half_width([10, 10.2, 9.8]) == pytest.approx(0.049685, abs=1e-5)
    assert relative_half_width([10, 10]) is None  # two windows: no interval


def test_stable_once_the_interval_is_within_the_tolerance():
    # windows of 2 calls: means 10, 10.2, 9.8 -> +-4.97% <= 5% after 6 calls; the rest never runs
    res, rt = _timed([10, 10, 10.2, 10.2, 9.8, 9.8, 99, 99])
    assert res["stopped_by"] == "stable" and res["iterations"] == 6 and rt.calls == 6
    iv = res["interval"]
    assert iv["stable"] is True and iv["reason"] is None and iv["windows"] == 3 and iv["window_calls"] == 2
    assert iv["half_width"] == pytest.approx(0.049685, abs=1e-5)
    assert iv["window_throughputs"] == pytest.approx([100, 1000 / 10.2, 1000 / 9.8])
    assert res["throughput"] == pytest.approx(100) and iv["low"] == pytest.approx(100 / 1.049685, rel=1e-5)
    assert iv["high"] == pytest.approx(100 / (1 - 0.049685), rel=1e-5) and iv["median"] == pytest.approx(100)
    lat = res["latency_ms"]
    assert lat["count"] == 6 and lat["p50"] == lat["median"] == pytest.approx(10)
    assert res["latency_per_sample_ms"]["p99"] == pytest.approx(lat["p99"])
    assert res["wall_s"] == pytest.approx(60 / 1000)


def test_minimum_duration_before_a_stable_stop():
    res, _ = _timed([10.0] * 50, stability=__import__("zoo.pipeline").pipeline.Stability(
        window=2, windows=3, tolerance=0.05, min_duration_s=0.1))
    assert res["stopped_by"] == "stable" and res["iterations"] == 10  # 100 ms of fake time, not 60


def test_automatic_windows_are_sized_from_the_last_warm_up_call():
    from zoo.pipeline import Stability
    auto = Stability(windows=3, tolerance=0.05, min_duration_s=0)
    slow, _ = _timed([400.0] * 20, warmup=1, stability=auto)  # 0.4 s calls: one call per window
    assert slow["interval"]["window_calls"] == 1 and slow["stopped_by"] == "stable" and slow["iterations"] == 3
    quick, _ = _timed([10.0] * 200, warmup=2, stability=auto)  # 10 ms calls: 25 per window
    assert quick["interval"]["window_calls"] == 25 and quick["iterations"] == 75
    assert auto.calls_per_window(None) == 1 and Stability(window=4).calls_per_window(1.0) == 4


def test_minimum_calls_before_a_stable_stop():
    from zoo.pipeline import Stability
    res, _ = _timed([10.0] * 50, stability=Stability(window=2, windows=3, tolerance=0.05, min_duration_s=0,
                                                      min_calls=13))
    assert res["stopped_by"] == "stable" and res["iterations"] == 14  # the first window end at or past 13 calls


def test_unstable_runs_to_the_iteration_cap_and_says_so():
    lat = [10, 10, 20, 20] * 10  # window means alternate 10, 20: never within 5%
    res, _ = _timed(lat, iterations=12)
    assert res["stopped_by"] == "iterations" and res["iterations"] == 12
    iv = res["interval"]
    assert iv["stable"] is False and iv["windows"] == 6 and iv["half_width"] > 0.05
    assert iv["reason"].startswith("stopped at --iters 12: +-") and "above the tolerance +-5.0%" in iv["reason"]
    from zoo.stats import shown
    assert shown(res) == f"{res['throughput']:.1f}/s ±{iv['half_width']:.1%} UNSTABLE"


def test_time_budget_ends_an_unstable_run():
    res, _ = _timed([10, 10, 20, 20] * 50, time_budget_s=0.1)  # 100 ms of fake time
    assert res["stopped_by"] == "time_budget" and res["interval"]["stable"] is False
    assert "time budget (0.1 s)" in res["interval"]["reason"]
    assert sum(([10, 10, 20, 20] * 50)[:res["iterations"]]) >= 100


def test_too_few_windows_have_no_interval():
    res, _ = _timed([10.0] * 5, iterations=5)  # 2 complete windows of 2 calls
    iv = res["interval"]
    assert iv["half_width"] is None and iv["low"] is None and iv["stable"] is False
    assert iv["reason"] == "2 windows: too few for an interval (at least 3)"


def test_stability_off_still_measures_the_interval_and_settings_checked():
    from zoo.pipeline import Stability
    res, _ = _timed([5.0] * 10, iterations=10, stability=None)
    # automatic windows: about 0.25 s of 5 ms calls (sized by the first timed call: no warm-up)
    assert res["stopped_by"] == "iterations" and res["interval"]["window_calls"] == 50
    assert res["interval"]["windows"] == 0 and res["interval"]["reason"].startswith("0 windows: too few")
    for bad in (dict(windows=2), dict(tolerance=0.0), dict(tolerance=1.5), dict(min_duration_s=-1),
                dict(min_calls=-1), dict(window=-1), dict(window_s=0)):
        with pytest.raises(ValueError):
            Stability(**bad)


# ---------------------------------------------------------------- CPU time and the CPU-bound ceiling

def _burn(seconds):
    """Spin on this thread for `seconds` of its own CPU time."""
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        x += 1
    return x


class CpuSource(ToySource):
    """Reading burns (or sleeps) a known time; preprocessing is the toy adapter's."""

    def __init__(self, n, read_s, burn):
        super().__init__(n)
        self.read_s, self.burn = read_s, burn

    def read(self, sample_id):
        if self.burn:
            _burn(self.read_s)
        else:
            time.sleep(self.read_s)
        return super().read(sample_id)


def test_infer_only_cpu_time_per_sample_from_the_cpu_clock():
    from zoo.pipeline import Stability  # noqa: F401 (same helper as the stability tests)
    clock = FakeClock()
    cpu = {"ns": 0}

    class Busy(FakeRuntime):
        def infer(self, feeds):
            cpu["ns"] += 30_000_000          # each call takes 30 ms of process CPU (two cores' worth of 15 ms)
            return super().infer(feeds)

    rt = Busy(clock, [15])
    res = infer_only(rt, {}, 3, warmup=2, iterations=4, time_budget_s=None, input_desc="z", clock=clock,
                     cpu_clock=lambda: cpu["ns"])
    # warm-up calls are not counted: 4 timed calls x 30 ms / (4 x 3 samples) = 10 ms per sample
    assert res["cpu_s_per_sample"] == pytest.approx(0.010)


@pytest.mark.parametrize("burn", [True, False])
def test_run_pipeline_counts_each_stage_cpu_time(runtime, burn):
    src = CpuSource(6, 0.03, burn)
    res = run_pipeline(runtime, src, ADAPTER, 2, IN, OUT, ADAPTER.metrics(src), workers=1)
    cpu = res["cpu"]
    assert set(cpu["stages_s"]) == {"read", "preprocess", "postprocess"}
    if burn:   # 6 reads x 30 ms of CPU each
        assert 0.18 <= cpu["stages_s"]["read"] < 0.4
        assert cpu["process_s"] >= cpu["stages_s"]["read"]
    else:      # sleeping is wall time, not CPU time
        assert cpu["stages_s"]["read"] < 0.05
        assert res["stages"]["read"]["total_s"] >= 0.18
    assert all(v >= 0 for v in cpu["stages_s"].values())


def test_cpu_ceiling_hand_computed():
    from zoo.pipeline import cpu_ceiling
    pipe = {"num_samples": 8, "throughput": 2.5,
            "cpu": {"process_s": 9.0, "stages_s": {"read": 1.0, "preprocess": 0.6, "postprocess": 0.4}}}
    infer = {"throughput": 4.0, "cpu_s_per_sample": 0.5}
    c = cpu_ceiling(pipe, infer, cores=2)
    # other = 2.0 s / 8 = 0.25 s per sample; 2 cores / (0.5 + 0.25) = 2.667/s < 4/s
    assert c["other_cpu_s_per_sample"] == pytest.approx(0.25)
    assert c["throughput"] == pytest.approx(8 / 3)
    assert c["vs_infer"] == pytest.approx(2 / 3)
    assert c["pipeline_vs_ceiling"] == pytest.approx(2.5 / (8 / 3))
    # with cores to spare the ceiling is the infer-only rate itself
    spare = cpu_ceiling(pipe, infer, cores=8)
    assert spare["throughput"] == pytest.approx(4.0) and spare["vs_infer"] == pytest.approx(1.0)
    # no CPU figures (an older record, a runtime without them): no ceiling
    assert cpu_ceiling(pipe, {"throughput": 4.0}, cores=2) is None
    assert cpu_ceiling({**pipe, "cpu": None}, infer, cores=2) is None
