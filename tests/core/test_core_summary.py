"""The terminal summary of a record (zoo.summary) and result file names (zoo.stages.record.run_stem)."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from zoo.stages.config import RunConfig
from zoo.stages.record import run_stem
from zoo.summary import lines

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "result_example.json"


def _record():
    rec = json.loads(EXAMPLE.read_text())
    rec["device"]["details"] = {"threads_used": 2, "isa": ["avx2", "avx512f"]}
    for p in rec["perf"]:
        if p["status"] != "ok":
            continue
        p["interval"] = {"method": "t", "confidence": 0.95, "window_calls": 5, "windows": 4,
                         "window_throughputs": [p["throughput"]] * 4, "median": p["throughput"],
                         "low": p["throughput"] / 1.011, "high": p["throughput"] / 0.989, "half_width": 0.011,
                         "tolerance": 0.02, "stable": True, "reason": None}
    return rec


def test_summary_has_what_benchmark_app_prints_and_fits_100_columns():
    rec = _record()
    rec["perf"][2]["interval"].update(half_width=0.071, stable=False,
                                      reason="stopped by the time budget (10 s): +-7.1% above the tolerance +-2.0%")
    out = lines(rec, "results/unetpp/x.json")
    text = "\n".join(out)
    assert all(len(line) <= 100 for line in out), max(out, key=len)
    assert "runtime onnxruntime 1.31.1, precision fp32 (executed fp32)" in text
    assert "2 threads, ISA avx2 avx512f" in text
    row = next(line for line in out if re.match(r"\s+1\s+infer\s", line))
    # count, duration, throughput with its interval, latency p50/p90/p99, stop reason
    assert re.search(r"25\.0\s+\+-1\.1%\s+20\s+0\.8\s+39\.6\s+44\.0\s+47\.2\s+call cap", row), row
    bad = next(line for line in out if re.match(r"\s+4\s+infer\s", line))
    assert "UNSTABLE +-7.1%" in bad
    assert "UNSTABLE: bs4 infer_only: stopped by the time budget (10 s): +-7.1%" in text
    assert out[-1] == "verdict: OK"


def test_summary_of_an_invalid_record_and_the_interleaved_speed_up():
    rec = _record()
    rec["status"], rec["error"] = "invalid", "verify failed: 3 decision flips"
    rec["precision"] = "int8"
    rec["reduced_precision"] = {"executed": "int8", "fp32_baseline": {
        "batch_size": 1, "speedup": 3.62, "speedup_interval": {"low": 3.55, "high": 3.70, "half_width": 0.02,
                                                              "rounds": 24, "stable": True, "method": "m"}}}
    out = lines(rec, "r.json")
    assert "  speed-up int8 over fp32 at bs1: x3.62 [3.55, 3.70], 24 interleaved rounds" in out
    assert out[-1] == "verdict: INVALID: verify failed: 3 decision flips"
    old = copy.deepcopy(rec)
    del old["reduced_precision"]["fp32_baseline"]["speedup_interval"]
    assert any("(not interleaved: a record before schema 1.11)" in line for line in lines(old, "r.json"))


@pytest.mark.parametrize("fields,stem", [
    ({}, "unetpp-onnxruntime-fp32-20261207T010203Z"),
    ({"precision": "int8"}, "unetpp-onnxruntime-int8-20261207T010203Z"),
    ({"precision": "bf16", "runtime": "openvino", "shards": 2}, "unetpp-openvino-bf16-shards2-20261207T010203Z"),
])
def test_result_file_names_carry_precision_and_shards(fields, stem):
    import calendar
    t = calendar.timegm((2026, 12, 7, 1, 2, 3))
    assert run_stem(RunConfig(model="unetpp", **fields), "unetpp", t) == stem
