"""ONNX Runtime CUDA / TensorRT runtimes without a GPU: provider lists and options, the one-line
error when the provider is missing, and the IO-binding path (run here on the CPU device, the same
code that times host-to-device and device-to-host copies on a GPU)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from zoo.errors import ZooError
from zoo.export import export_onnx
from zoo.pipeline import infer_only
from zoo.runtimes import ModelArtifacts, get_runtime
from zoo.runtimes.onnxruntime_rt import OnnxRuntimeCuda, OnnxRuntimeTensorRT


def test_missing_providers_are_a_one_line_error(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ZooError, match=r"runtime 'onnxruntime-cuda' is not available: onnxruntime .* has no "
                                       r"CUDAExecutionProvider here .*available: CPUExecutionProvider"):
        get_runtime("onnxruntime-cuda")
    with pytest.raises(ZooError, match=r"no TensorrtExecutionProvider here .*TensorRT"):
        get_runtime("onnxruntime-trt")


def test_provider_lists_and_options(monkeypatch, tmp_path):
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setenv("ZOO_CUDA_DEVICE", "1")
    cuda = get_runtime("onnxruntime-cuda")(2)
    assert cuda.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"] and cuda.device_id == 1
    assert cuda.provider_options(tmp_path)[0] == {"device_id": "1", "cudnn_conv_algo_search": "EXHAUSTIVE",
                                                  "do_copy_in_default_stream": "1"}
    trt = get_runtime("onnxruntime-trt")(2)
    assert trt.providers[0] == "TensorrtExecutionProvider"
    opts = trt.provider_options(tmp_path)[0]
    assert opts["trt_fp16_enable"] == "False" and opts["trt_engine_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path / "compiled" / "tensorrt")
    assert OnnxRuntimeCuda.device_type == OnnxRuntimeTensorRT.device_type == "cuda"


def test_io_binding_path_times_copies(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
    path = tmp_path / "m.onnx"
    export_onnx(net, np.zeros((1, 3, 8, 8), np.float32), path, "x", "y", 17, True)

    class CpuBound(OnnxRuntimeCuda):  # the GPU runtime's IO-binding code on the CPU provider
        providers = ["CPUExecutionProvider"]
        ort_device = "cpu"

        def provider_options(self, cache):
            return [{}]

    rt = CpuBound(1)
    rt.compile(ModelArtifacts(path, ["x"], ["y"]), tmp_path)
    rt.load()
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    out = rt.infer({"x": x})["y"]
    with torch.no_grad():
        np.testing.assert_allclose(out, net(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
    assert set(rt.last_timing) == {"h2d_ms", "compute_ms", "d2h_ms"}
    block = infer_only(rt, {"x": x}, 2, warmup=1, iterations=4, time_budget_s=None, input_desc="z")
    for k in ("h2d_latency_ms", "compute_latency_ms", "d2h_latency_ms"):
        assert block[k]["count"] == 4
    assert rt.settings()["io_binding"] is True
