"""zoo.runtimes: registry, ONNX Runtime compile cache and numerics, PyTorch eager."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from zoo.errors import ZooError
from zoo.runtimes import RUNTIMES, ModelArtifacts, get_runtime
from zoo.runtimes.onnxruntime_rt import OnnxRuntime
from zoo.runtimes.torch_rt import TorchRuntime

IN, OUT = "images", "logits"


def test_get_runtime_unknown_lists_known():
    with pytest.raises(ZooError) as ei:
        get_runtime("nope")
    msg = str(ei.value)
    assert "'nope'" in msg
    for name in RUNTIMES:
        assert name in msg
    assert "onnxruntime" in msg and "torch" in msg


def test_get_runtime_known():
    assert get_runtime("onnxruntime") is OnnxRuntime
    assert get_runtime("torch") is TorchRuntime


def test_onnxruntime_compile_cache_and_numbers(tiny_onnx, make_batch, tmp_path):
    arts = ModelArtifacts(onnx_path=tiny_onnx, input_names=[IN], output_names=[OUT])
    rt = OnnxRuntime(threads=1)
    c1 = rt.compile(arts, tmp_path)
    assert c1.cached is False and rt.compiled is c1
    assert c1.path.is_file() and c1.path.name == "model.ort.onnx"
    assert (tmp_path / "compiled" / "onnxruntime") in c1.path.parents
    assert not list(tmp_path.rglob("*.tmp"))

    rt2 = OnnxRuntime(threads=1)
    c2 = rt2.compile(arts, tmp_path)
    assert c2.cached is True and c2.path == c1.path
    assert rt2.settings()["compile_cached"] is True and rt.settings()["compile_cached"] is False

    x = make_batch(3, seed=5)
    plain = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run([OUT], {IN: x})[0]
    with rt2:
        out = rt2.infer({IN: x})
    assert list(out) == [OUT]
    y = out[OUT]
    assert y.shape == plain.shape == (3, 1, 16, 16)
    scale = float(np.abs(plain).max())
    assert float(np.abs(y - plain).max()) <= 1e-5 * scale
    assert rt2.session is None                     # closed by the context manager


def test_onnxruntime_compile_key_follows_file_content(tiny_onnx, tmp_path):
    other = tmp_path / "copy.onnx"
    other.write_bytes(tiny_onnx.read_bytes())
    a = OnnxRuntime(threads=1).compile(ModelArtifacts(tiny_onnx, [IN], [OUT]), tmp_path / "c")
    b = OnnxRuntime(threads=1).compile(ModelArtifacts(other, [IN], [OUT]), tmp_path / "c")
    assert b.cached is True and b.path == a.path     # same bytes, another path: same entry


def test_onnxruntime_wrong_input_name_fails_on_load(tiny_onnx, tmp_path):
    rt = OnnxRuntime(threads=1)
    rt.compile(ModelArtifacts(tiny_onnx, ["actual_input_1"], [OUT]), tmp_path)
    with pytest.raises(ZooError) as ei:
        rt.load()
    msg = str(ei.value)
    assert str(rt.compiled.path) in msg and "'images'" in msg and "'actual_input_1'" in msg


def test_onnxruntime_compile_errors(tmp_path):
    with pytest.raises(ZooError, match="no ONNX model"):
        OnnxRuntime(threads=1).compile(ModelArtifacts(None, [IN], [OUT]), tmp_path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage" * 20)
    with pytest.raises(ZooError) as ei:
        OnnxRuntime(threads=1).compile(ModelArtifacts(bad, [IN], [OUT]), tmp_path / "cache")
    assert str(bad) in str(ei.value) and "\n" not in str(ei.value)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_torch_runtime_matches_module(tiny_model, make_batch, tmp_path, restore_torch_threads):
    rt = TorchRuntime(threads=1)
    c = rt.compile(ModelArtifacts(None, [IN], [OUT], torch_module=tiny_model), tmp_path)
    assert c.path is None and c.cached is False and c.extra["mode"] == "eager"
    assert not any(tmp_path.iterdir())
    x = make_batch(4, seed=9)
    with rt:
        assert torch.get_num_threads() == 1
        out = rt.infer({IN: x})
        with torch.inference_mode():
            ref = tiny_model(torch.from_numpy(x)).numpy()
    assert list(out) == [OUT]
    assert isinstance(out[OUT], np.ndarray)
    np.testing.assert_allclose(out[OUT], ref, rtol=1e-6, atol=1e-7)
    assert rt.settings()["threads"] == 1


def test_torch_runtime_multiple_outputs_and_non_contiguous_feed(tmp_path, restore_torch_threads):
    class Two(torch.nn.Module):
        def forward(self, x):
            return x + 1, x * 2
    rt = TorchRuntime(threads=1)
    rt.compile(ModelArtifacts(None, ["x"], ["plus", "times"], torch_module=Two()), tmp_path)
    rt.load()
    x = np.arange(12, dtype=np.float32).reshape(3, 4).T        # non-contiguous view
    out = rt.infer({"x": x})
    np.testing.assert_array_equal(out["plus"], x + 1)
    np.testing.assert_array_equal(out["times"], x * 2)


def test_torch_runtime_without_module():
    with pytest.raises(ZooError, match="no PyTorch module"):
        TorchRuntime(threads=1).compile(ModelArtifacts(None, [IN], [OUT]), None)
