"""`python -m zoo ab` through the real CLI: two configurations interleaved in one process, with a
planted slowdown (the test-only runtime plug-in tests/fixtures/runtimes/slow10.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from tests.zootest import assert_clean_failure

ROOT = Path(__file__).resolve().parents[3]
PLUGIN = ROOT / "tests" / "fixtures" / "runtimes" / "slow10.py"
QUICK = ("--batch-sizes", "1", "--warmup", "1", "--stable-window", "2", "--iters", "60", "--time-budget", "4",
         "--min-duration", "0")


def test_a_planted_slowdown_fails_the_gate(run_zoo, out, monkeypatch):
    monkeypatch.setenv("ZOO_RUNTIME_PLUGINS", str(PLUGIN))
    monkeypatch.setenv("ZOO_TEST_SLOWDOWN", "1.0")  # B twice as slow: a verdict no shared machine blurs
    proc = run_zoo("ab", "--model", "unetpp", "--base", "onnxruntime", "--candidate", "onnxruntime-slow10",
                   "--fail-slower",
                   "0.3", "--out", out, *QUICK)
    assert proc.returncode == 1, proc.stderr[-2000:]
    rec = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    assert rec["kind"] == "zoo.ab" and rec["verdict"] == "slower" and rec["gate_failed"] is True
    assert 0.25 < rec["ratio"] < 0.75 and rec["low"] <= rec["ratio"] <= rec["high"] < 1
    assert rec["base"]["runtime"] == "onnxruntime fp32" and rec["candidate"]["runtime"] == "onnxruntime-slow10 fp32"
    assert rec["base"]["verify_passed"] and rec["candidate"]["verify_passed"] and rec["rounds"] >= 3
    assert rec["device"]["isa"] is not None and rec["device"]["threads"] >= 1
    assert "SLOWER" in proc.stderr and "GATE: the candidate is slower by" in proc.stderr
    assert Path(proc.stdout.strip().splitlines()[-1]).parent == out / "ab"


def test_ab_refuses_what_it_cannot_do_before_any_work(run_zoo, out):
    env_plugins = os.environ.get("ZOO_RUNTIME_PLUGINS")
    assert env_plugins is None or "slow10" not in env_plugins
    proc = run_zoo("ab", "--model", "unetpp", "--base", "onnxruntime", "--candidate", "onnxruntime-slow10", "--out", out, *QUICK)
    assert_clean_failure(proc, out, "unknown runtime 'onnxruntime-slow10'")
    proc = run_zoo("ab", "--model", "unetpp", "--base", "onnxruntime", "--candidate", "openvino", "--precision", "int8",
                   "--out", out)
    assert_clean_failure(proc, out, "--precision does not apply to ab")
    proc = run_zoo("ab", "--model", "unetpp", "--base", "onnxruntime", "--candidate", "openvino", "--batch-sizes", "1,4",
                   "--out", out)
    assert_clean_failure(proc, out, "ab times one batch size")
