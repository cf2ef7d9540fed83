"""OpenVINO on a small real model: same outputs as ONNX Runtime, one static compile per batch size,
the speed-deciding settings explicit and recorded."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.errors import ZooError
from zoo.onnx_export import export_onnx
from zoo.runtimes import ModelArtifacts, get_runtime

pytest.importorskip("openvino", reason="openvino is not installed in this model environment")


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 2, 1)).eval()
    path = tmp_path_factory.mktemp("ov") / "m.onnx"
    export_onnx(net, np.zeros((1, 3, 16, 16), np.float32), path, "x", "y", 17, True)
    return path


def test_openvino_matches_onnxruntime_per_batch_size(onnx_file, tmp_path):
    arts = ModelArtifacts(onnx_file, ["x"], ["y"], key="k")
    ov_rt, ort_rt = get_runtime("openvino")(2), get_runtime("onnxruntime")(2)
    for rt in (ov_rt, ort_rt):
        rt.compile(arts, tmp_path)
        rt.load()
    rng = np.random.default_rng(0)
    for bs in (1, 3, 1):
        x = rng.normal(size=(bs, 3, 16, 16)).astype(np.float32)
        a, b = ov_rt.infer({"x": x})["y"], ort_rt.infer({"x": x})["y"]
        assert a.shape == (bs, 2, 16, 16)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    s = ov_rt.settings()
    assert s["inference_num_threads"] == 2 and s["performance_hint"] == "LATENCY" and s["num_streams"] == 1
    assert s["inference_precision_hint"] == "f32" and s["device"] == "CPU"
    assert sorted(ov_rt.compile_seconds) == [1, 3]  # one static compile per batch size, reused
    ov_rt.close()


def test_unreadable_model_is_one_line(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"junk")
    rt = get_runtime("openvino")(1)
    with pytest.raises(ZooError, match=r"bad\.onnx: OpenVINO cannot read the model"):
        rt.compile(ModelArtifacts(tmp_path / "bad.onnx", ["x"], ["y"]), tmp_path)
