"""benchmarks/peak_fraction.py's reading of result records: best batch size per runtime, the
fraction of the run's peak, the verdict, the pipeline figures at that batch size, top operators."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("peak_fraction", ROOT / "benchmarks" / "peak_fraction.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _record(runtime, blocks, peak=250.0):
    return {"runtime": {"name": runtime}, "device": {"fp32_peak": {"gflops": peak, "measurements": [peak - 20, peak]}},
            "export": {"cost": {"flops_per_sample": 53_200_000_000}}, "perf": blocks}


def _infer(bs, tp, gflops, ops=None):
    b = {"scope": "infer_only", "status": "ok", "batch_size": bs, "throughput": tp, "gflops": gflops,
         "stopped_by": "stable", "stability": {"spread": 0.03}}
    if ops:
        b["op_profile"] = {"calls": 3, "total_ms_per_call": 1.0, "ops": ops}
    return b


def test_best_rows_verdict_pipeline_and_operators():
    pf = _script()
    ops = [{"op_type": "Conv", "share": 0.8, "ms_per_call": 1, "kernels_per_call": 1, "gflops": 204.4},
           {"op_type": "ConvTranspose", "share": 0.14, "ms_per_call": 1, "kernels_per_call": 1, "gflops": 50.2},
           {"op_type": "Reorder", "share": 0.04, "ms_per_call": 1, "kernels_per_call": 1},
           {"op_type": "Add", "share": 0.02, "ms_per_call": 1, "kernels_per_call": 1}]
    ort = _record("onnxruntime", [
        _infer(1, 3.0, 160.0), _infer(2, 3.5, 186.0, ops),
        {"scope": "pipeline", "status": "ok", "batch_size": 2, "pipeline_vs_infer": 0.76,
         "cpu": {"process_s": 1, "stages_s": {}, "ceiling": {"vs_infer": 0.84}}},
        {"scope": "infer_only", "status": "failed", "batch_size": 4, "error": "out of memory"}])
    torch = _record("torch", [_infer(1, 1.5, 80.0)])
    rows = pf.best_rows("erfnet", [ort, torch], target=0.8)
    best = next(r for r in rows if r["best"])
    assert best["runtime"] == "onnxruntime" and best["batch_size"] == 2
    assert best["peak_fraction"] == pytest.approx(186.0 / 250.0) and best["verdict"] == "below"
    assert best["own_peak_fraction"] == pytest.approx(186.0 / 250.0)
    assert best["vs_torch"] == pytest.approx(3.5 / 1.5)
    assert best["pipeline_vs_infer"] == 0.76 and best["cpu_ceiling"] == 0.84
    assert best["top_ops"] == "Conv 80% 204 GFLOP/s, ConvTranspose 14% 50 GFLOP/s, Reorder 4%"
    md = pf.table(rows, 0.8)
    assert "| 76% (84%) | Conv 80% 204 GFLOP/s" in md
    torch_row = next(r for r in rows if r["runtime"] == "torch")
    assert torch_row["pipeline_vs_infer"] is None and torch_row["top_ops"] == "" and torch_row["verdict"] == ""
    # a bandwidth-bound model gets no 80% verdict
    fs = pf.best_rows("fastscnn", [ort], target=0.8)
    assert fs[0]["verdict"].startswith("bandwidth-bound")


def test_fraction_is_against_the_highest_reading_of_every_runtime():
    pf = _script()
    # OpenVINO timed in a slow hour: its own readings top at 185, ONNX Runtime's at 260
    slow = _record("openvino", [_infer(2, 0.47, 179.0)], peak=185.0)
    fast = _record("onnxruntime", [_infer(4, 0.45, 171.0)], peak=260.0)
    rows = {r["runtime"]: r for r in pf.best_rows("fcn8s", [slow, fast], target=0.8)}
    assert rows["openvino"]["own_peak_fraction"] == pytest.approx(179 / 185)     # 97% by its own readings
    assert rows["openvino"]["peak_fraction"] == pytest.approx(179 / 260)         # 69% in the side-by-side
    assert rows["openvino"]["peak_gflops"] == 260.0 and rows["openvino"]["peak_range"] == [165.0, 185.0]
    best = next(r for r in rows.values() if r["best"])
    assert best["verdict"] == "below"
    assert "| 69% (97%) |" in pf.table(list(rows.values()), 0.8)


def test_uncertainty_reads_the_interval_first_and_the_old_spread_as_a_fallback():
    pf = _script()
    new = _infer(1, 3.0, 160.0)
    new["interval"] = {"half_width": 0.071, "stable": False, "windows": 12, "tolerance": 0.02}
    old = _infer(2, 3.5, 186.0)  # before 1.11: stability only
    rows = {r["batch_size"]: r for r in pf.best_rows("erfnet", [_record("onnxruntime", [new]),
                                                                 _record("torch", [old])], target=0.8)}
    assert (rows[1]["half_width"], rows[1]["stable"], rows[1]["spread"]) == (0.071, False, None)
    assert (rows[2]["half_width"], rows[2]["spread"]) == (None, 0.03)
    md = pf.table(list(rows.values()), 0.8)
    assert "| stable (+-7.1% UNSTABLE) |" in md and "| stable (spread 3%) |" in md
    assert "stopped by (95% interval or spread)" in md
