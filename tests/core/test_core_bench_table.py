"""`python -m zoo bench`'s summary table: a row per batch size and runtime (precision) with the
throughput's interval (zoo.stats.figure's text), the latency per batch, ratios to the first run
labelled as across runs, and each reduced precision's speed-up as its run measured it,
interleaved with fp32 (constructed records); every line within 100 columns; the header line
before each configuration's steps."""
import json
import re
from pathlib import Path

from zoo.cli import bench_header, bench_table
from zoo.stages.config import RunConfig


def _rec(runtime: str, precision: str, infer: dict, peak: dict | None = None, half=0.01, speedup=None) -> dict:
    perf = []
    for bs, t in infer.items():
        perf += [{"batch_size": bs, "scope": "infer_only", "status": "ok", "throughput": t,
                  "latency_ms": {"median": 1000.0 * bs / t},
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


def _fits(text: str) -> None:
    assert all(len(line) <= 100 for line in text.splitlines()), max(text.splitlines(), key=len)


def test_rows_with_intervals_ratios_across_runs_and_the_interleaved_speed_up():
    recs = [_rec("openvino", "fp32", {1: 10.0, 4: 20.0}), _rec("torch", "fp32", {1: 5.0, 4: 8.0}, half=0.03),
            _rec("openvino", "bf16", {1: 30.0, 4: 50.0}, {"precision": "bf16", "gflops": 800.0, "kernel": "ov mm"},
                 speedup=(2.93, 2.88, 2.99)),
            _rec("torch", "bf16", {1: 6.0, 4: 16.0}, {"precision": "bf16", "gflops": 400.0}, half=None)]
    text = bench_table(recs)
    rows = _rows(text)
    assert "x first: over openvino fp32, across runs" in text
    assert "infer p50" in text and "ms/batch" in text and "samples/s" in text  # units in the headers
    # samples/s ± half-width, median ms per batch, ratio to the first run, pipeline (its share of infer)
    assert rows[(1, "openvino fp32")] == ["10.0 ±1.0%", "100.0", "base", "5.0 (50%)"]
    assert rows[(1, "torch fp32")] == ["5.0 ±3.0% UNSTABLE", "200.0", "0.50 ±3.2%", "2.5 (50%)"]
    assert rows[(4, "torch bf16")][:3] == ["16.0 ±? (4 windows) UNSTABLE", "250.0", "0.80"]
    # the one speed-up: the run's own, interleaved with fp32; no ratio across runs is called one
    assert "speed-up openvino bf16 over fp32 at bs1 (interleaved in the run): x2.93 [2.88, 2.99]" in text
    assert "speed-up torch bf16" not in text and "/torch fp32" not in text
    # the best batch size of each run against its own precision's peak, the peaks named once
    best = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in text.splitlines())
            if len(cells) == 5 and cells[1].isdigit()}
    assert best["torch bf16"] == ["4", "16.00", "160", "40% of 400"]
    assert best["openvino bf16"] == ["4", "50.00", "500", "62% of 800"]
    assert best["openvino fp32"] == ["4", "20.00", "200", "200% of 100"]
    words = " ".join(text.split())  # the peaks' line is folded within 100 columns
    assert "fp32 100 (torch conv2d 3x3); bf16 800 (ov mm); bf16 400)" in words
    _fits(text)


def test_the_figures_are_zoo_stats_figure():
    from zoo.stats import block_figure
    rec = _rec("torch", "fp32", {1: 5.0}, half=0.03)
    text = bench_table([rec])
    assert block_figure(rec["perf"][0]) == "5.0 ±3.0% UNSTABLE" and "5.0 ±3.0% UNSTABLE" in text


def test_one_precision_labels_runtimes_only():
    text = bench_table([_rec("torch", "fp32", {1: 3.0}), _rec("openvino", "fp32", {1: 6.0})])
    assert "fp32" not in text.splitlines()[0] and "x first: over torch, across runs" in text
    assert _rows(text)[(1, "openvino")][2] == "2.00 ±1.4%"


def test_the_widest_table_fits_100_columns():
    """The longest runtime name at a reduced precision, figures without an interval (the widest
    text figure() makes), four-digit throughputs and a failed pipeline: still within 100 columns."""
    recs = [_rec("onnxruntime-cuda", "int8", {1: 1234.5, 64: 9876.5}, half=None),
            _rec("onnxruntime-trt", "fp32", {1: 5000.0, 64: 2.5}, half=0.123)]
    for p in recs[1]["perf"]:
        if p["scope"] == "pipeline" and p["batch_size"] == 64:
            p.update(status="failed", error="out of memory " * 20)
    text = bench_table(recs)
    assert "1234.5 ±? (4 windows) UNSTABLE" in text and "failed" in text
    _fits(text)


def test_a_header_names_each_configuration():
    assert bench_header(2, 4, RunConfig(model="unetpp", runtime="openvino", precision="int8", batch_sizes=[1, 4])) \
        == "== run 2/4: unetpp openvino int8 (batch sizes 1,4)"
    assert bench_header(1, 1, RunConfig(model="unetpp")) == \
        "== run 1/1: unetpp onnxruntime fp32 (batch sizes from the manifest)"


def test_the_table_of_a_real_short_run_fits_100_columns():
    """Records of a real `python -m zoo bench --model unetpp --limit 8 --batch-sizes 1,4 --iters 20
    --runtimes torch,onnxruntime,openvino --precisions fp32,int8` (tests/fixtures/short_bench)."""
    from zoo.stats import block_figure
    folder = Path(__file__).resolve().parents[1] / "fixtures" / "short_bench"
    recs = sorted((json.loads(p.read_text()) for p in folder.glob("*.json")), key=lambda r: r["timestamps"]["started"])
    text = bench_table(recs)
    _fits(text)
    rows = _rows(text)
    for rec in recs:
        label = f"{rec['runtime']['name']} {rec['precision']}"
        for p in rec["perf"]:
            if p["scope"] == "infer_only":
                assert rows[(p["batch_size"], label)][0] == block_figure(p)
    assert "speed-up onnxruntime int8 over fp32 at bs1 (interleaved in the run): x" in text
