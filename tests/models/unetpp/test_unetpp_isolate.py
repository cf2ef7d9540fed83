"""--isolate on the real model: one child process per batch size, the memory watchdog killing a
batch size that needs too much memory, the sweep going on, one merged valid record."""
from __future__ import annotations

import json
from pathlib import Path

from zoo import schema
from tests.zootest import assert_clean_failure, last_json

QUICK = ["--warmup", "0", "--iters", "1", "--time-budget", "1", "--no-peak", "--stable-tolerance", "0"]


def _perf(rec):
    return {(p["batch_size"], p["scope"]): p for p in rec["perf"]}


def test_isolated_sweep_survives_a_batch_size_killed_for_memory(run_zoo, tmp_path):
    # 1) both batch sizes in their own processes, no limit: their peak resident memory is measured
    with_peak = [a for a in QUICK if a != "--no-peak"]
    free = run_zoo("run", "--model", "unetpp", "--isolate", "--batch-sizes", "1,64", *with_peak, "--out", tmp_path / "a")
    assert free.returncode == 0, free.stderr[-2000:]
    rec = last_json(free)
    schema.validate(rec)
    perf = _perf(rec)
    assert set(perf) == {(b, s) for b in (1, 64) for s in ("infer_only", "pipeline")}
    assert all(p["status"] == "ok" for p in perf.values())
    assert rec["runtime"]["settings"]["isolation"] == {"process_per_batch_size": True, "memory_limit_mb": None}
    assert all(a["consistent_across_batch_sizes"] for a in rec["accuracy"])
    peak = rec["device"]["fp32_peak"]  # each child read the machine's (cached) peak; the merge keeps the highest
    assert peak["kernel"] in peak["candidates"] and all(p["peak_gflops"] == peak["gflops"] for p in rec["perf"]
                                                         if p.get("gflops") is not None)
    small, big = perf[(1, "infer_only")]["peak_rss_mb"], perf[(64, "infer_only")]["peak_rss_mb"]
    assert big > small + 300, (small, big)  # 64 UNet++ activations at 96x96 need far more memory

    # 2) a limit between the two: batch size 64 is killed, recorded with the reason; 1 is kept
    limit = (small + big) / 2
    proc = run_zoo("run", "--model", "unetpp", "--isolate", "--memory-limit", f"{limit:.0f}",
                   "--batch-sizes", "64,1", *QUICK, "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec2 = last_json(proc)
    schema.validate(rec2)
    perf2 = _perf(rec2)
    assert set(perf2) == {(64, "infer_only"), (1, "infer_only"), (1, "pipeline")}
    failed = perf2[(64, "infer_only")]
    assert failed["status"] == "failed" and failed["error"].startswith("killed: resident memory reached")
    assert f"above the memory limit of {limit:.0f} MB" in failed["error"]
    assert failed["peak_rss_mb"] > limit
    assert perf2[(1, "infer_only")]["status"] == perf2[(1, "pipeline")]["status"] == "ok"
    assert rec2["runtime"]["settings"]["isolation"]["memory_limit_mb"] == float(f"{limit:.0f}")
    # accuracy comes from the batch size that ran, and equals the unlimited run's
    assert [a["value"] for a in rec2["accuracy"]] == [a["value"] for a in rec["accuracy"]]
    assert "bs64: FAILED: killed" in proc.stderr


def test_isolated_sweep_where_every_batch_size_fails_writes_nothing(run_zoo, out):
    proc = run_zoo("run", "--model", "unetpp", "--isolate", "--batch-sizes", "1,2", "--sha256", "0" * 64,
                   *QUICK, "--out", out)
    assert_clean_failure(proc, out, "every batch size failed", "sha256")


def test_memory_limit_needs_isolate(run_zoo, out):
    proc = run_zoo("run", "--model", "unetpp", "--memory-limit", "100", *QUICK, "--out", out)
    assert_clean_failure(proc, out, "--memory-limit needs --isolate")
