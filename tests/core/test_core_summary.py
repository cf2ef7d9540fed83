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


def test_summary_has_what_benchmark_app_prints_and_fits_100_columns(monkeypatch):
    monkeypatch.delenv("ZOO_LOG_LEVEL", raising=False)
    rec = _record()
    rec["perf"][2]["interval"].update(half_width=0.071, stable=False,
                                      reason="stopped by the time budget (10 s): +-7.1% above the tolerance +-2.0%")
    rec["perf"][3]["interval"].update(half_width=None, stable=False, windows=2,
                                      reason="2 windows: too few for an interval (at least 3)")
    rec["perf"][3]["stopped_by"] = "time_budget"
    out = lines(rec, "results/unetpp/x.json")
    text = "\n".join(out)
    assert all(len(line) <= 100 for line in out), max(out, key=len)
    assert "runtime onnxruntime 1.31.1, precision fp32 (executed fp32)" in text
    assert "2 threads, ISA avx2 avx512f" in text
    assert "p50" in text and "ms" in text and "samples/s" in text
    row = next(line for line in out if re.match(r"\s+1\s+infer\s", line))
    # count, duration, throughput with its interval, latency p50/p90/p99, stop reason
    assert re.search(r"25\.0 ±1\.1%\s+20\s+0\.8\s+39\.6\s+44\.0\s+47\.2\s+call cap", row), row
    bad = next(line for line in out if re.match(r"\s+4\s+infer\s", line))
    assert "26.7 ±7.1% UNSTABLE" in bad
    few = next(line for line in out if re.match(r"\s+4\s+pipeline\s", line))
    assert "25.4 ±? (2 windows) UNSTABLE" in few and few.endswith("time budget")
    # the unstable figures folded into one line; their reasons in the record, and at DEBUG level
    assert "  2 figures UNSTABLE: reasons with -v and in the record; a longer --time-budget narrows them" in out
    assert "stopped by the time budget" not in text
    assert out[-1] == "verdict: OK"
    # the failed batch size: FAILED in the table, its error below in full
    assert re.search(r"\s+64\s+infer\s+FAILED$", text, re.M)
    assert "  FAILED bs64 infer_only: out of memory (example)" in out
    monkeypatch.setenv("ZOO_LOG_LEVEL", "DEBUG")
    debug = lines(rec, "results/unetpp/x.json")
    assert "  UNSTABLE: bs4 infer_only: stopped by the time budget (10 s): +-7.1% above the tolerance +-2.0%" in debug
    assert "  UNSTABLE: bs4 pipeline: 2 windows: too few for an interval (at least 3)" in debug
    assert not any("2 figures UNSTABLE" in line for line in debug)
    assert lines(rec, "x.json", reasons=False)[-2].startswith("  2 figures UNSTABLE")


def test_long_texts_are_folded_within_100_columns():
    rec = _record()
    rec["device"]["details"]["isa"] = ["avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                                       "amx_tile", "amx_bf16", "amx_int8", "avx_vnni", "fma", "f16c"]
    rec["status"], rec["error"] = "invalid", "verify failed: " + "a long reason " * 20
    for p in rec["perf"]:
        if p["status"] == "ok":
            p["latency_ms"].update(median=12345.6, p90=23456.7, p99=34567.8)
            p["throughput"] *= 100
    out = lines(rec, "r.json")
    assert all(len(line) <= 100 for line in out), max(out, key=len)
    assert "amx_int8" in "\n".join(out) and out[-1].strip().endswith("a long reason")


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


SHORT_BENCH = Path(__file__).resolve().parents[1] / "fixtures" / "short_bench"  # a real short bench run's records


@pytest.mark.parametrize("name", sorted(p.name for p in SHORT_BENCH.glob("*.json")))
def test_summary_of_a_real_short_run_is_not_a_wall_of_warnings(name, monkeypatch):
    """Records of `python -m zoo bench --model unetpp --limit 8 --batch-sizes 1,4 --iters 20`: most
    figures UNSTABLE, pipelines of 2 windows. Every line (the path aside) within 100 columns, the
    unstable figures one line at INFO, their reasons at DEBUG."""
    monkeypatch.delenv("ZOO_LOG_LEVEL", raising=False)
    rec = json.loads((SHORT_BENCH / name).read_text())
    out = lines(rec, SHORT_BENCH / name)
    assert all(len(line) <= 100 for line in out[1:]), max(out[1:], key=len)
    assert not any(line.lstrip().startswith("UNSTABLE:") for line in out)
    (folded,) = [line for line in out if "UNSTABLE: reasons with -v" in line]
    count = int(folded.split()[0])
    monkeypatch.setenv("ZOO_LOG_LEVEL", "DEBUG")
    reasons = [line for line in lines(rec, SHORT_BENCH / name) if line.startswith("  UNSTABLE: ")]
    assert len(reasons) == count >= 1
