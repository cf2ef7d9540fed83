"""Per-precision peaks (zoo.peaks): real PyTorch / ONNX Runtime / OpenVINO kernels on small shapes,
the ISA bound from constructed flags and clocks, the per-machine cache, a run's Peak
(zoo.stages.infer.Peak), a real sweep whose model beats the peak, and the checker's rule."""
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo.peaks
from zoo.checks import broken
from zoo.envinfo import cpu_isa
from zoo.errors import ZooError
from zoo.peak_kernels import kernel_onnx, kernel_shapes
from zoo.peaks import (Kernel, cpu_clock, isa_bound, kernels, machine_peak, measure, set_fraction)
from zoo.stages.infer import Peak

N = 128
SMALL = [Kernel("torch", "MatMul", (64,)), Kernel("onnxruntime", "MatMul", (64,))]
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "result_example.json"


def quick(precision, threads=1, **kw):
    return measure(precision, threads, repeats=2, budget_s=0.2, **kw)


# ---------------------------------------------------------------- kernels

@pytest.mark.parametrize("kernel", [Kernel("onnxruntime", "MatMul", (N,)), Kernel("onnxruntime", "Conv", (16, 16))])
def test_quantized_graphs_compute_the_operator(kernel):
    """The QDQ graphs are a real quantized MatMul / Conv: close to the float one, not equal to it."""
    import onnxruntime as ort
    x = np.random.default_rng(0).standard_normal(kernel_shapes(kernel)[0], dtype=np.float32)
    exact = ort.InferenceSession(kernel_onnx(kernel, False), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    quant = ort.InferenceSession(kernel_onnx(kernel, True), providers=["CPUExecutionProvider"]).run(None, {"X": x})[0]
    rel = np.linalg.norm(quant - exact) / np.linalg.norm(exact)
    assert 0 < rel < 0.05, rel


def test_candidates_and_operation_counts():
    fp32 = kernels("fp32")
    assert {k.family for k in fp32} == {"torch", "onnxruntime", "openvino"}  # all installed in this environment
    assert {k.label for k in fp32} >= {"torch.mm 1024", "torch.mm 2048", "onnxruntime MatMul 2048",
                                       "openvino Conv 3x3 64ch 128x128", "torch conv2d 3x3 256ch 64x64"}
    assert {k.family for k in kernels("int8")} == {"onnxruntime", "openvino"}
    assert {k.family for k in kernels("bf16")} == {"torch", "openvino"}
    assert Kernel("torch", "MatMul", (10,)).ops == 2000
    assert Kernel("openvino", "Conv", (4, 8)).ops == 2 * 4 * 4 * 9 * 8 * 8
    with pytest.raises(ZooError, match="no peak for precision 'fp8'"):
        kernels("fp8")


def test_int8_peak_counts_only_integer_kernels():
    """Every int8 candidate read back as an integer kernel; torch (no int8 kernel) refused, not counted."""
    cands = [Kernel("onnxruntime", "MatMul", (N,)), Kernel("onnxruntime", "Conv", (16, 16)),
             Kernel("openvino", "MatMul", (N,)), Kernel("openvino", "Conv", (16, 16)), Kernel("torch", "MatMul", (N,))]
    p = quick("int8", candidates=cands)
    assert set(p["candidates"]) == {k.label for k in cands[:4]}, p["refused"]
    assert set(p["refused"]) == {"torch.mm 128"} and "no int8 kernel" in p["refused"]["torch.mm 128"]
    assert p["gflops"] == max(p["candidates"].values()) and p["candidates"][p["kernel"]] == p["gflops"]
    details = p["kernel_details"]
    assert "Integer" in details["onnxruntime MatMul 128"] and "QLinearConv" in details["onnxruntime Conv 3x3 16ch 16x16"]
    assert all(any(t in details[k] for t in (" u8 ", " i8 ")) for k in details if k.startswith("openvino"))
    assert "GOP/s" in p["method"] and p["threads"] == 1


def test_bf16_counts_openvino_only_where_it_runs_bf16():
    p = quick("bf16", candidates=[Kernel("torch", "MatMul", (N,)), Kernel("openvino", "Conv", (16, 16))])
    assert "torch.mm 128" in p["candidates"] and "bf16" in p["kernel_details"]["torch.mm 128"]
    if {"avx512_bf16", "amx_bf16"} & set(cpu_isa()):
        assert "bf16" in p["kernel_details"]["openvino Conv 3x3 16ch 16x16"]
    else:
        assert "ran as" in p["refused"]["openvino Conv 3x3 16ch 16x16"]


@pytest.mark.skipif("avx512_fp16" in cpu_isa() or "amx_fp16" in cpu_isa(), reason="this CPU runs fp16")
def test_fp16_is_unavailable_where_openvino_falls_back():
    p = quick("fp16", candidates=[Kernel("openvino", "MatMul", (N,)), Kernel("openvino", "Conv", (16, 16))])
    assert "gflops" not in p and "kernel" not in p and p["candidates"] == {}
    assert "ran as" in p["unavailable"] and len(p["refused"]) == 2


# ---------------------------------------------------------------- the ISA bound

AVX512 = ["fma", "avx2", "avx512f"]


def test_isa_bound_from_flags_and_clock():
    fp32 = isa_bound("fp32", 2, AVX512, 2.0, "test")
    assert fp32["gflops"] == 2 * 2.0 * 16 * 2 * 2 and fp32["ops_per_cycle_per_core"] == 64
    assert "reason" not in fp32 and any("2 FMA units" in a for a in fp32["assumptions"])
    assert isa_bound("fp32", 1, ["fma", "avx2"], 3.0)["gflops"] == 3.0 * 8 * 2 * 2
    assert isa_bound("fp32", 1, ["sse2"], 1.0)["gflops"] == 4 * 2       # no FMA: one multiply + one add
    assert isa_bound("bf16", 2, AVX512 + ["avx512_bf16"], 2.0)["gflops"] == 2 * fp32["gflops"]
    assert isa_bound("bf16", 2, AVX512, 2.0)["gflops"] == fp32["gflops"]  # no bf16 instructions: fp32 lanes
    assert isa_bound("int8", 2, AVX512 + ["avx512_vnni"], 2.0)["gflops"] == 4 * fp32["gflops"]
    amx = isa_bound("int8", 1, AVX512 + ["avx512_vnni", "amx_tile", "amx_int8"], 2.0)
    assert amx["gflops"] == 2.0 * 2048 and any("AMX" in a for a in amx["assumptions"])
    none = isa_bound("int8", 2, ["fma", "avx2"], 2.0)
    assert none["gflops"] is None and "no VNNI or AMX" in none["reason"]
    unknown = isa_bound("fp32", 2, AVX512, None)
    assert unknown["gflops"] is None and unknown["reason"] == "frequency unknown"


def test_cpu_clock_sources(tmp_path):
    freq, info = tmp_path / "max_freq", tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu MHz\t\t: 2596.150\nflags\t\t: fpu avx2\n")
    assert cpu_clock(freq, info) == (pytest.approx(2.59615), cpu_clock(freq, info)[1])
    assert "cpu MHz" in cpu_clock(freq, info)[1]
    freq.write_text("3500000\n")
    ghz, source = cpu_clock(freq, info)
    assert ghz == 3.5 and "max_freq" in source
    assert cpu_clock(tmp_path / "none", tmp_path / "none") == (None, "frequency unknown")


# ---------------------------------------------------------------- the cache

@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache folder; every measurement counts as made on a quiet machine (this one is shared)."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ZOO_PEAK_REMEASURE", raising=False)
    monkeypatch.setattr(zoo.peaks, "BUSY_SHARE", 1.01)
    return tmp_path / "cache" / "peaks"


def _peak(threads=1, **kw):
    lines = []
    p = machine_peak("fp32", threads, progress=lines.append, candidates=SMALL, repeats=2, budget_s=0.1, **kw)
    return p, lines


def test_cache_is_read_back_and_keyed_by_threads_and_versions(cache, monkeypatch):
    first, lines = _peak()
    assert first["cached"] is False and len(lines) == 2 and "peak fp32: 2/2 kernels, best" in lines[-1]
    assert first["isa_bound"]["method"].startswith("cores x clock") and first["measure_s"] > 0
    files = list(cache.glob("fp32-1t-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["key"]["threads"] == 1
    again, lines = _peak()
    assert again["cached"] is True and lines == []  # read, not measured: no kernel ran
    assert {k: again[k] for k in first if k != "cached"} == {k: first[k] for k in first if k != "cached"}
    two, lines = _peak(threads=2)
    assert two["cached"] is False and len(lines) == 2 and len(list(cache.glob("fp32-2t-*.json"))) == 1
    real = zoo.peaks.versions()
    monkeypatch.setattr(zoo.peaks, "versions", lambda: {**real, "onnxruntime": "0.0.1"})
    upgraded, lines = _peak()
    assert upgraded["cached"] is False and len(list(cache.glob("fp32-1t-*.json"))) == 2
    monkeypatch.setenv("ZOO_PEAK_REMEASURE", "1")
    forced, lines = _peak()
    assert forced["cached"] is False and len(lines) == 2 and len(list(cache.glob("fp32-1t-*.json"))) == 2


@pytest.mark.parametrize("damage", ["{not json", '{"key": {}, "peak": {}}', "truncate"])
def test_a_damaged_cache_entry_is_measured_again_with_a_warning(cache, capsys, damage):
    first, _ = _peak()
    path = next(cache.glob("fp32-1t-*.json"))
    text = path.read_text()
    path.write_text(text[: len(text) // 2] if damage == "truncate" else damage)
    again, lines = _peak()
    err = capsys.readouterr().err
    assert again["cached"] is False and len(lines) == 2
    assert f"warning: peak cache {path}:" in err and "measuring again" in err
    assert _peak()[0]["cached"] is True  # rewritten whole


def test_a_busy_measurement_is_measured_again_when_quiet_keeping_each_kernels_best(cache, monkeypatch):
    first, _ = _peak()
    path = next(cache.glob("fp32-1t-*.json"))
    entry = json.loads(path.read_text())
    assert entry["peak"]["busy"] is False and entry["peak"]["measure_count"] == 1
    low, high = "torch.mm 64", "onnxruntime MatMul 64"
    entry["peak"].update(busy=True, others_cpu_share=0.6, kernel=high, gflops=1e6)
    entry["peak"]["candidates"].update({low: 1e-3, high: 1e6})  # one kernel slowed down, one better than now
    path.write_text(json.dumps(entry))
    monkeypatch.setattr(zoo.peaks, "quiet_now", lambda: False)
    still, lines = _peak()
    assert still["cached"] is True and still["busy"] is True and lines == []  # still busy: not measured again
    monkeypatch.setattr(zoo.peaks, "quiet_now", lambda: True)
    merged, lines = _peak()
    assert merged["cached"] is False and len(lines) == 2 and merged["measure_count"] == 2 and merged["busy"] is False
    assert merged["candidates"][high] == 1e6 and merged["kernel"] == high and merged["gflops"] == 1e6
    assert merged["candidates"][low] > 1e-3  # the slowed-down rate replaced by the new one
    assert merged["isa_bound"]["note"].startswith("the measured peak 1000000 is above this bound")
    assert _peak()[0]["cached"] is True


def test_others_share_of_our_cpus():
    from zoo.peaks import _cpu_sample, others_share
    import os
    cpus = len(os.sched_getaffinity(0))
    assert others_share((10.0, 2.0, 0.0), (10.0 + 3.0 + cpus * 0.5, 5.0, 1.0)) == pytest.approx(0.5)
    assert others_share((10.0, 2.0, 0.0), (10.5, 3.0, 1.0)) == 0.0  # never negative
    assert others_share(None, (1.0, 1.0, 1.0)) is None
    sample = _cpu_sample()
    assert sample is not None and sample[0] > 0 and sample[1] > 0


def test_a_cache_that_cannot_be_written_measures_without_keeping(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("ZOO_CACHE", str(blocker))
    p, lines = _peak()
    assert p["cached"] is False and p["gflops"] > 0 and len(lines) == 2  # measured once, not twice
    assert "cannot be written" in capsys.readouterr().err


def test_run_peak_reads_the_cache_and_a_reduced_precision_uses_its_own(cache, monkeypatch):
    small = {"fp32": SMALL, "int8": [Kernel("onnxruntime", "MatMul", (64,))],
             "fp16": [Kernel("openvino", "MatMul", (64,))]}
    monkeypatch.setattr(zoo.peaks, "kernels", lambda precision, families=None: small[precision])
    p = Peak(1, True)
    assert p.own is None and p.gflops() == p.info["gflops"] and p.info["cached"] is False
    assert set(p.device_fields()) == {"fp32_peak"} and p.info["memory"]["gbytes_per_s"] > 0
    assert p.info["kernel"] in p.info["candidates"] and "measurements" not in p.info
    q = Peak(1, True, "int8", "openvino")
    assert q.info["cached"] is True and q.own["cached"] is False and q.gflops() == q.own["gflops"]
    assert set(q.device_fields()) == {"fp32_peak", "precision_peak"} and q.own["precision"] == "int8"
    if not {"avx512_fp16", "amx_fp16"} & set(cpu_isa()):
        r = Peak(1, True, "fp16", "openvino")
        assert r.gflops() is None and "ran as" in r.device_fields()["precision_peak"]["unavailable"]
    assert Peak(1, False).device_fields() == {} and Peak(1, False).gflops() is None


# ---------------------------------------------------------------- the fraction is never above 1

def test_set_fraction():
    block = {"gflops": 50.0}
    assert set_fraction(block, 200.0) is None and block["peak_fraction"] == 0.25 and "peak_note" not in block
    block = {"gflops": 204.0, "peak_note": "old"}
    note = set_fraction(block, 195.0)
    assert block["peak_fraction"] is None and note == block["peak_note"]
    assert note == "the model reached 204.0 GFLOP/s, above the measured peak 195.0: peak measurement incomplete"
    assert "GOP/s" in set_fraction({"gflops": 2.0}, 1.0, "int8")
    block = {"gflops": 5.0}
    assert set_fraction(block, None) is None and block["peak_fraction"] is None
    from zoo.peaks import apply_peak
    perf = [{"batch_size": 1, "scope": "infer_only", "gflops": 90.0}, {"batch_size": 1, "scope": "pipeline", "gflops": 110.0},
            {"batch_size": 2, "scope": "infer_only", "status": "failed"}]
    notes = apply_peak(perf, 100.0)
    assert notes == ["bs1 pipeline: the model reached 110.0 GFLOP/s, above the measured peak 100.0: peak measurement "
                     "incomplete"]
    assert [b.get("peak_fraction") for b in perf] == [0.9, None, None] and "peak_gflops" not in perf[2]
    assert perf[0]["peak_gflops"] == perf[1]["peak_gflops"] == 100.0


def test_a_sweep_whose_model_beats_the_peak_records_no_fraction(cache, monkeypatch, capsys, restore_torch_threads):
    """A real sweep (torch runtime, a tiny module, a source of 6 samples) whose model is said to cost
    so much per sample that it beats any peak: every block's fraction is null with a note, never > 1;
    the same sweep at a small cost records gflops / peak_gflops."""
    from zoo.adapter import ModelAdapter
    from zoo.datasets.base import Opened, Sample, Source
    from zoo.manifest import load_manifest
    from zoo.metrics.binary import BinaryIoU
    from zoo.runtimes import ModelArtifacts
    from zoo.runtimes.torch_rt import TorchRuntime
    from zoo.stages.config import RunConfig
    from zoo.stages.infer import sweep

    class Six(Source):
        family = "toy"

        def __init__(self):
            super().__init__(Opened(root=Path("/nonexistent"), split="toy", ids_file=None, builtin=True, limit=None,
                                    expected=None), [f"s{i}" for i in range(6)])

        def read(self, sample_id):
            return Sample(sample_id, np.full((2, 4, 4), int(sample_id[1:]), np.float32), np.ones((4, 4), bool), {})

    class Toy(ModelAdapter):
        def build(self):
            raise NotImplementedError

        def load_weights(self, module, path):
            raise NotImplementedError

        def preprocess(self, sample):
            return sample.image, sample.id

        def postprocess(self, output, meta):
            return {"mask": np.asarray(output)[0] > 0}

        def metrics(self, source):
            return [BinaryIoU("toy", "sign", key="mask")]

    monkeypatch.setattr(zoo.peaks, "kernels", lambda precision, families=None: SMALL)
    manifest = load_manifest("unetpp")
    adapter = Toy(dataclasses.replace(manifest, name="toy", model={**manifest.model, "options": {}}))
    rt = TorchRuntime(threads=1)
    rt.compile(ModelArtifacts(None, ["x"], ["y"], torch_module=torch.nn.Conv2d(2, 1, 1)), None)
    rt.load()
    cfg = RunConfig(model="toy", runtime="torch", warmup=1, iterations=3, time_budget=5.0, stable_tolerance=0,
                    min_duration=0.0, post_workers=0)
    io = type("IO", (), {"input": {"name": "x"}, "output": {"name": "y"}})()
    source = Six()
    head = [adapter.preprocess(source.read(i))[0] for i in source.ids[:2]]
    try:
        for flops, beaten in ((1e15, True), (1.0, False)):
            export = {"cost": {"flops_per_sample": flops, "activation_bytes": 64}}
            perf, _, peak = sweep(cfg, rt, io, adapter, source, head, [1, 2], export)
            ok = [b for b in perf if b["status"] == "ok"]
            assert len(ok) == 4 and all(b["peak_gflops"] == peak.gflops() for b in ok)
            for b in ok:
                if beaten:
                    assert b["peak_fraction"] is None and "peak measurement incomplete" in b["peak_note"]
                else:
                    assert b["peak_fraction"] == b["gflops"] / b["peak_gflops"] <= 1 and "peak_note" not in b
            err = capsys.readouterr().err
            assert ("WARNING: bs1 infer_only: the model reached" in err) == beaten
            assert ("ZOO_PEAK_REMEASURE=1" in err) == beaten
    finally:
        rt.close()


def _record(schema_version="1.11"):
    rec = json.loads(FIXTURE.read_text())
    rec["schema_version"] = schema_version
    block = next(p for p in rec["perf"] if p["status"] == "ok" and p["scope"] == "infer_only")
    return rec, block


def test_checker_refuses_a_fraction_above_one_or_not_of_its_peak():
    rec, block = _record()
    assert "cost" not in rec["export"]  # gflops is not checked against a cost here
    block["gflops"], block["peak_gflops"] = 120.0, 100.0
    block["peak_fraction"] = 1.2
    problems = broken(rec, groups=("perf",))
    assert len(problems) == 1 and "peak_fraction <= 1" in problems[0] and "1.2" in problems[0]
    block["peak_fraction"], block["peak_note"] = None, "the model reached ..."   # what the sweep writes
    assert broken(rec, groups=("perf",)) == []
    block["peak_gflops"] = block["gflops"] * 2
    block["peak_fraction"] = 0.4
    assert any("peak_fraction == gflops / peak_gflops" in p for p in broken(rec, groups=("perf",)))
    block["peak_fraction"] = block["gflops"] / block["peak_gflops"]
    assert broken(rec, groups=("perf",)) == []
    old, block = _record("1.10")  # before the cached peak: fractions of another measurement, some above 1
    block["peak_fraction"] = 1.05
    assert broken(old, groups=("perf",)) == []



def test_best_seconds_stops_at_its_budget():
    from zoo.cost import best_seconds
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.02)
    assert best_seconds(slow, 100, budget_s=0.05) >= 0.02 and len(calls) == 1 + 3  # warm-up + at least 3
    calls.clear()
    best_seconds(slow, 2, budget_s=0.0)
    assert len(calls) == 1 + 2
    calls.clear()
    best_seconds(slow, 5)
    assert len(calls) == 1 + 5
