"""`python -m zoo bench`'s summary table: a row per batch size and runtime:precision with the
throughput's interval, ratios to the first run labelled as across runs, and each reduced
precision's speed-up as its run measured it, interleaved with fp32 (constructed records)."""
import re

from zoo.cli import bench_table


def _rec(runtime: str, precision: str, infer: dict, peak: dict | None = None, half=0.01, speedup=None) -> dict:
    perf = []
    for bs, t in infer.items():
        perf += [{"batch_size": bs, "scope": "infer_only", "status": "ok", "throughput": t,
                  "gflops": 10.0 * t, "peak_fraction": 10.0 * t / (peak or {"gflops": 100.0})["gflops"],
                  "interval": {"half_width": half, "stable": half is not None and half <= 0.02, "windows": 4}},
                 {"batch_size": bs, "scope": "pipeline", "status": "ok", "throughput": t / 2}]
    device = {"fp32_peak": {"gflops": 100.0, "kernel": "torch conv2d 3x3"}}
    if peak:
        device["precision_peak"] = peak
    rec = {"runtime": {"name": runtime}, "precision": precision, "device": device, "perf": perf}
    if speedup:
        rec["reduced_precision"] = {"fp32_baseline": {"batch_size": 1, "speedup": speedup[0], "speedup_interval": {
            "low": speedup[1], "high": speedup[2], "stable": True}}}
    return rec


def _rows(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0].isdigit():
            out[(int(cells[0]), cells[1])] = cells[2:]
    return out


def test_rows_with_intervals_ratios_across_runs_and_the_interleaved_speed_up():
    recs = [_rec("openvino", "fp32", {1: 10.0, 4: 20.0}), _rec("torch", "fp32", {1: 5.0, 4: 8.0}, half=0.03),
            _rec("openvino", "bf16", {1: 30.0, 4: 50.0}, {"precision": "bf16", "gflops": 800.0, "kernel": "ov mm"},
                 speedup=(2.93, 2.88, 2.99)),
            _rec("torch", "bf16", {1: 6.0, 4: 16.0}, {"precision": "bf16", "gflops": 400.0}, half=None)]
    text = bench_table(recs)
    rows = _rows(text)
    assert "x first: over openvino:fp32, across runs" in text
    assert rows[(1, "openvino:fp32")] == ["10.0 +-1.0%", "base", "5.0", "50%"]
    assert rows[(1, "torch:fp32")] == ["5.0 +-3.0% UNSTABLE", "0.50 +-3%", "2.5", "50%"]
    assert rows[(4, "torch:bf16")][:2] == ["16.0 +-? UNSTABLE", "0.80"]
    # the one speed-up: the run's own, interleaved with fp32; no ratio across runs is called one
    assert "speed-up openvino:bf16 over fp32 at bs1 (interleaved in the run): x2.93 [2.88, 2.99]" in text
    assert "speed-up torch:bf16" not in text and "/torch:fp32" not in text
    assert "best torch:bf16: bs4 16.00/s, 160 GFLOP/s = 40% of the 400 GFLOP/s bf16 peak" in text
    assert "best openvino:bf16: bs4 50.00/s, 500 GFLOP/s = 62% of the 800 GFLOP/s bf16 peak (ov mm)" in text
    assert all(len(line) <= 100 for line in text.splitlines()[:len(rows) + 2]), text


def test_one_precision_labels_runtimes_only():
    text = bench_table([_rec("torch", "fp32", {1: 3.0}), _rec("openvino", "fp32", {1: 6.0})])
    assert "fp32" not in text.splitlines()[0] and "x first: over torch, across runs" in text
    assert _rows(text)[(1, "openvino")][1] == "2.00 +-1%"
