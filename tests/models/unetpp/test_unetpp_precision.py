"""--precision (issue 13, first step): a precision a runtime cannot run is refused before any
work; OpenVINO's executed precision is read back from each compiled model and must be the one
asked for (an "fp32" run that executes bf16 fails); PyTorch bf16 runs under CPU autocast; the
record's precision is the executed one and the verify stage uses that precision's tolerance."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.zootest import assert_clean_failure, last_json
from zoo.envinfo import cpu_isa
from zoo.errors import ZooError

ROOT = Path(__file__).resolve().parents[3]
HAS_BF16 = bool({"avx512_bf16", "amx_bf16"} & set(cpu_isa()))


def zoo_run(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZOO_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "zoo", "run", "--model", "unetpp", "--batch-sizes", "4", "--no-peak",
                           "--iters", "2", "--warmup", "1", "--time-budget", "1", "--limit", "8", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


def test_a_precision_the_runtime_cannot_run_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(zoo_run(tmp_path, "--precision", "bf16", "--runtime", "onnxruntime", "--out", str(out)),
                         out, "--precision bf16: runtime onnxruntime does not run bf16 (it runs: fp32")
    assert_clean_failure(zoo_run(tmp_path, "--precision", "int8", "--runtime", "torch", "--out", str(out)),
                         out, "runtime torch does not run int8")
    assert not (tmp_path / "cache").exists()  # refused before the checkpoint, the data or an export


def test_openvino_fp32_run_executes_fp32(tmp_path):
    pytest.importorskip("openvino")
    proc = zoo_run(tmp_path, "--runtime", "openvino", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = last_json(proc)
    assert rec["precision"] == "fp32"
    s = rec["runtime"]["settings"]
    assert s["inference_precision_hint"] == "f32" and s["executed_precision_per_batch"] == {"4": "f32"}
    assert rec["verify"]["precision"] == "fp32" and rec["verify"]["passed"]
    assert rec["device"]["details"]["isa"] == cpu_isa()


def test_openvino_precision_read_back_refuses_a_mismatch():
    """The check itself, on compiled models that report another precision than was asked for
    (as OpenVINO's CPU plugin does by default on AMX/AVX512-BF16 machines, or when it cannot run
    bf16): both directions fail with one line."""
    ov = pytest.importorskip("openvino")
    from zoo.runtimes.openvino_rt import OpenVinoRuntime

    class Compiled:
        def __init__(self, t):
            self.t = t

        def get_property(self, name):
            assert name == "INFERENCE_PRECISION_HINT"
            return self.t

    fp32 = OpenVinoRuntime(1, "fp32")
    assert fp32._check_precision(Compiled(ov.Type.f32), (1, 3, 8, 8)) == "f32"
    with pytest.raises(ZooError, match=r"asked for fp32 \(f32\) but the CPU plugin compiled the \[1, 3, 8, 8\] model "
                                       r"to run bf16"):
        fp32._check_precision(Compiled(ov.Type.bf16), (1, 3, 8, 8))
    with pytest.raises(ZooError, match=r"asked for bf16 \(bf16\) but .* to run f32 \(this CPU: "):
        OpenVinoRuntime(1, "bf16")._check_precision(Compiled(ov.Type.f32), (1, 3, 8, 8))


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has neither avx512_bf16 nor amx_bf16: OpenVINO cannot run bf16 here")
def test_openvino_bf16_runs_bf16_and_keeps_the_decisions(tmp_path):
    pytest.importorskip("openvino")
    proc = zoo_run(tmp_path, "--runtime", "openvino", "--precision", "bf16", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = last_json(proc)
    assert rec["precision"] == "bf16" and rec["runtime"]["settings"]["executed_precision_per_batch"] == {"4": "bf16"}
    v = rec["verify"]
    assert v["precision"] == "bf16" and v["passed"] and v["max_rel_diff"] > 1e-4  # really another precision
    fp32 = last_json(zoo_run(tmp_path, "--runtime", "openvino", "--out", str(tmp_path / "out32")))
    for a, b in zip(rec["accuracy"], fp32["accuracy"]):
        assert abs(a["value"] - b["value"]) <= 0.01 * b["value"], (a["name"], a["value"], b["value"])


def test_torch_bf16_is_autocast(tmp_path):
    proc = zoo_run(tmp_path, "--runtime", "torch", "--precision", "bf16", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = last_json(proc)
    assert rec["precision"] == "bf16" and rec["runtime"]["settings"]["autocast"] == "cpu bfloat16"
    assert rec["verify"]["max_rel_diff"] > 1e-4 and rec["verify"]["precision"] == "bf16"
    assert json.dumps(rec)  # a valid, strict record (validated when written)


def test_bench_puts_precisions_side_by_side(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZOO_CACHE": str(tmp_path / "cache")}
    common = ["--model", "unetpp", "--batch-sizes", "2", "--no-peak", "--iters", "2", "--warmup", "1",
              "--time-budget", "1", "--limit", "4"]
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "zoo", "bench", *common, "--runtimes", "onnxruntime,torch",
                           "--precisions", "fp32,bf16", "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bench: left out: runtime onnxruntime does not run bf16" in proc.stderr
    recs = [json.loads(Path(p).read_text()) for p in proc.stdout.split() if p.endswith(".json")]
    assert [(r["runtime"]["name"], r["precision"]) for r in recs] == [("onnxruntime", "fp32"), ("torch", "fp32"),
                                                                       ("torch", "bf16")]
    rows = [line.split()[:3] for line in proc.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert rows == [["2", "onnxruntime", "fp32"], ["2", "torch", "fp32"], ["2", "torch", "bf16"]]
    assert "speed-up torch bf16 over fp32 at bs2 (interleaved in the run): x" in proc.stdout
    assert "x first: over onnxruntime fp32, across runs" in proc.stdout
    table = proc.stdout[:proc.stdout.index(str(out))]  # the table, then the records' paths
    assert all(len(line) <= 100 for line in table.splitlines()), table
    # one header per configuration, right before its steps
    heads = [(i, line) for i, line in enumerate(proc.stderr.splitlines()) if line.startswith("== run ")]
    assert [line for _, line in heads] == [f"== run {k}/3: unetpp {rt} {pr} (batch sizes 2)" for k, (rt, pr) in
                                           enumerate([("onnxruntime", "fp32"), ("torch", "fp32"), ("torch", "bf16")], 1)]
    assert all(proc.stderr.splitlines()[i + 1].startswith("[1/7] ") for i, _ in heads)
    none = subprocess.run([sys.executable, "-m", "zoo", "bench", *common, "--runtimes", "onnxruntime",
                           "--precisions", "bf16", "--out", str(tmp_path / "none")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert_clean_failure(none, tmp_path / "none", "--precisions bf16: none of the runtimes onnxruntime runs it")
