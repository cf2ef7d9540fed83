"""Per-precision GEMM peaks (zoo.peaks) and how a run's Peak uses them (zoo.stages.infer.Peak):
real ONNX Runtime / OpenVINO / PyTorch kernels on small matrices."""
import numpy as np
import pytest

from zoo.envinfo import cpu_isa
from zoo.errors import ZooError
from zoo.peaks import kernel_family, matmul_onnx, precision_peak
from zoo.stages.infer import Peak

N = 256


def test_quantized_graph_computes_the_product():
    """The QDQ graph is a real quantized A x B: close to the fp32 product, not equal to it."""
    import onnxruntime as ort
    rng = np.random.default_rng(0)
    a = rng.standard_normal((N, N), dtype=np.float32)
    exact = ort.InferenceSession(matmul_onnx(N, False), providers=["CPUExecutionProvider"]).run(None, {"A": a})[0]
    quant = ort.InferenceSession(matmul_onnx(N, True), providers=["CPUExecutionProvider"]).run(None, {"A": a})[0]
    rel = np.abs(quant - exact).max() / np.abs(exact).max()
    assert 0 < rel < 0.05


def test_int8_peak_runs_an_integer_kernel_in_onnxruntime():
    p = precision_peak("int8", 1, "onnxruntime", n=N, repeats=2)
    assert p["precision"] == "int8" and p["threads"] == 1 and p["n"] == N and p["gflops"] > 0
    assert p["kernel"].startswith("onnxruntime ") and ("Integer" in p["kernel"] or "QLinear" in p["kernel"])
    assert "GOP/s" in p["method"]


def test_bf16_peak_through_torch_and_fp32_is_gemm_peak():
    p = precision_peak("bf16", 1, "torch", n=N, repeats=2)
    assert p["kernel"].startswith("torch ") and "bf16" in p["kernel"] and p["gflops"] > 0
    f = precision_peak("fp32", 1, "openvino", n=N, repeats=2)  # fp32: torch.mm whatever the runtime
    assert f["kernel"].endswith("torch.mm fp32") and f["precision"] == "fp32"


@pytest.mark.skipif(not {"avx512_bf16", "amx_bf16"} & set(cpu_isa()), reason="this CPU has no bf16 instructions")
def test_bf16_peak_through_openvino_reads_back_the_bf16_kernel():
    p = precision_peak("bf16", 1, "openvino", n=N, repeats=2)
    assert "bf16" in p["kernel"] and p["kernel"].startswith("openvino ")


def test_int8_peak_through_openvino_reads_back_an_integer_kernel():
    p = precision_peak("int8", 1, "openvino", n=N, repeats=2)
    assert p["kernel"].startswith("openvino ") and any(t in p["kernel"] for t in (" u8 ", " i8 "))


@pytest.mark.skipif("avx512_fp16" in cpu_isa() or "amx_fp16" in cpu_isa(), reason="this CPU runs fp16")
def test_fp16_peak_is_unavailable_where_openvino_falls_back():
    with pytest.raises(ZooError, match="fp16 MatMul ran as"):
        precision_peak("fp16", 1, "openvino", n=N, repeats=1)


def test_kernel_choice_and_unknown_precision():
    assert kernel_family("bf16", "torch") == "torch" and kernel_family("bf16", "openvino") == "openvino"
    assert kernel_family("int8", "onnxruntime") == "onnxruntime" and kernel_family("int8", "openvino") == "openvino"
    assert kernel_family("bf16", "onnxruntime") == "openvino"
    with pytest.raises(ZooError, match="no GEMM peak for precision 'fp8'"):
        kernel_family("fp8", "torch")


def test_run_peak_fp32_unchanged_and_reduced_precision_uses_its_own(monkeypatch):
    import zoo.cost
    import zoo.peaks
    fp32 = iter([100.0, 90.0, 120.0])
    monkeypatch.setattr(zoo.cost, "gemm_peak", lambda threads, repeats=25: {
        "gflops": next(fp32), "method": "torch.mm", "threads": threads, "torch": "x"})
    monkeypatch.setattr(zoo.cost, "copy_bandwidth", lambda: {"gbytes_per_s": 10.0})
    p = Peak(2, True)
    assert p.own is None and p.again() == 90.0 and p.again() == 120.0 and p.gflops() == 120.0
    assert set(p.device_fields()) == {"fp32_peak"} and p.info["measurements"] == [100.0, 90.0, 120.0]

    fp32 = iter([100.0])
    own = iter([400.0, 450.0])
    monkeypatch.setattr(zoo.peaks, "precision_peak", lambda precision, threads, runtime, repeats, family=None: {
        "precision": precision, "gflops": next(own) if precision != "fp32" else 50.0, "threads": threads,
        "kernel": f"{runtime} {precision}", "n": 8, "method": "m"})
    q = Peak(2, True, "int8", "onnxruntime")
    assert q.again() == 450.0 and q.gflops() == 450.0 and q.info["gflops"] == 100.0  # fp32 measured once
    assert q.info["candidates"] == {"torch x torch.mm fp32": 100.0, "onnxruntime fp32": 50.0}  # torch.mm the faster here
    fields = q.device_fields()
    assert fields["precision_peak"]["measurements"] == [400.0, 450.0] and fields["fp32_peak"]["measurements"] == [100.0]

    fp32 = iter([100.0])

    def fail(*a, **k):
        raise ZooError("openvino: the fp16 MatMul ran as FullyConnected bf16")
    monkeypatch.setattr(zoo.peaks, "precision_peak", fail)
    r = Peak(2, True, "fp16", "openvino")
    assert r.gflops() is None and r.again() is None and "ran as" in r.device_fields()["precision_peak"]["unavailable"]


def test_isolated_children_merge_their_own_precision_peaks():
    """--isolate: each child measured its precision's peak; the merged record keeps every
    measurement and its fractions are of the highest (not of the fp32 peak)."""
    import copy
    import json
    from pathlib import Path
    from types import SimpleNamespace

    from zoo.isolate import _merge
    base = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "result_example.json").read_text())
    children = []
    for own in (400.0, 500.0):
        rec = copy.deepcopy(base)
        rec["device"]["fp32_peak"] = {"gflops": 100.0, "method": "m", "threads": 2, "measurements": [100.0]}
        rec["device"]["precision_peak"] = {"precision": "int8", "gflops": own, "measurements": [own]}
        children.append(rec)
    perf = [{"batch_size": 1, "scope": "infer_only", "status": "ok", "throughput": 10.0, "gflops": 100.0}]
    merged = _merge(children, perf, SimpleNamespace(memory_limit_mb=None), 0.0, [])
    assert merged["device"]["precision_peak"]["measurements"] == [400.0, 500.0]
    assert merged["device"]["precision_peak"]["gflops"] == 500.0 and perf[0]["peak_fraction"] == 0.2
    assert merged["device"]["fp32_peak"]["gflops"] == 100.0


def test_fp32_peak_is_the_best_of_torch_and_the_runtimes_own_kernel():
    """A peak bounds what the run can reach: torch.mm's BLAS may not use a CPU's widest units, so
    a run on onnxruntime/openvino takes the best of torch.mm and its own fp32 MatMul."""
    from zoo.peaks import fp32_peak
    for runtime in ("onnxruntime", "openvino"):
        p = fp32_peak(2, runtime, repeats=2)
        assert len(p["candidates"]) == 2, p["candidates"]
        assert p["gflops"] == max(p["candidates"].values()) and p["candidates"][p["kernel"]] == p["gflops"]
        assert any(k.startswith(runtime) for k in p["candidates"])
    torch_only = fp32_peak(2, "torch", repeats=2)
    assert list(torch_only["candidates"]) == [torch_only["kernel"]] and "torch.mm" in torch_only["kernel"]
