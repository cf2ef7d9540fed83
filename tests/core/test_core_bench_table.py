"""`python -m zoo bench`'s summary table: runtime:precision labels, the ratio to the first run, and
each reduced precision's speed-up over the same runtime's fp32 (constructed records)."""
import re

from zoo.cli import bench_table


def _rec(runtime: str, precision: str, infer: dict, peak: dict | None = None) -> dict:
    perf = []
    for bs, t in infer.items():
        perf += [{"batch_size": bs, "scope": "infer_only", "status": "ok", "throughput": t,
                  "gflops": 10.0 * t, "peak_fraction": 10.0 * t / (peak or {"gflops": 100.0})["gflops"]},
                 {"batch_size": bs, "scope": "pipeline", "status": "ok", "throughput": t / 2}]
    device = {"fp32_peak": {"gflops": 100.0}}
    if peak:
        device["precision_peak"] = peak
    return {"runtime": {"name": runtime}, "precision": precision, "device": device, "perf": perf}


def _cells(text: str) -> list[dict]:
    lines = text.splitlines()
    head = re.split(r"\s{2,}", lines[0].strip())  # names hold single spaces ("torch:fp32 infer/s")
    return [dict(zip(head, line.split())) for line in lines[1:] if line.split()[0].isdigit()]


def test_speedup_over_the_same_runtimes_fp32():
    recs = [_rec("openvino", "fp32", {1: 10.0, 4: 20.0}), _rec("torch", "fp32", {1: 5.0, 4: 8.0}),
            _rec("openvino", "bf16", {1: 30.0, 4: 50.0}, {"precision": "bf16", "gflops": 800.0}),
            _rec("torch", "bf16", {1: 6.0, 4: 16.0}, {"precision": "bf16", "gflops": 400.0})]
    text = bench_table(recs)
    rows = _cells(text)
    # ratios vs the first run, then the speed-ups over the same runtime's fp32 (openvino's is the first: once)
    assert rows[0]["torch:bf16/openvino:fp32"] == "0.60" and rows[0]["torch:bf16/torch:fp32"] == "1.20"
    assert rows[1]["torch:bf16/torch:fp32"] == "2.00" and rows[1]["openvino:bf16/openvino:fp32"] == "2.50"
    assert text.splitlines()[0].count("openvino:bf16/openvino:fp32") == 1
    # the best batch size against its own precision's peak
    assert "best torch:bf16: bs4 16.00/s, 160 GFLOP/s = 40% of the 400 GFLOP/s bf16 GEMM peak" in text
    assert "best torch:fp32: bs4 8.00/s, 80 GFLOP/s = 80% of the 100 GFLOP/s fp32 GEMM peak" in text


def test_no_speedup_columns_without_fp32_or_with_one_precision():
    text = bench_table([_rec("openvino", "bf16", {1: 3.0}), _rec("openvino", "int8", {1: 6.0})])
    assert "/openvino:fp32" not in text and "openvino:int8/openvino:bf16" in text
    text = bench_table([_rec("torch", "fp32", {1: 3.0}), _rec("openvino", "fp32", {1: 6.0})])
    assert "fp32" not in text.splitlines()[0] and "openvino/torch" in text
