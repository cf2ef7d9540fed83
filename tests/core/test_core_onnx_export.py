"""zoo.onnx_export: export with dynamic batch, checker, io, ORT parity, caching, metadata."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from zoo.errors import ZooError
from zoo.onnx_export import EXPORTER, check_onnx, ensure_onnx, export_key, export_onnx, onnx_io, parity
from zoo.fileutil import file_digest

IN, OUT = "images", "logits"


def _torch(model, x):
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def _ort(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run([OUT], {IN: x})[0]


def test_calibrated_model_is_not_flat(tiny_model, make_batch):
    y = _torch(tiny_model, make_batch(4))
    assert y.shape == (4, 1, 16, 16)
    assert float(y.std()) > 0.05
    assert (y > 0).any() and (y < 0).any()        # both decisions occur: flips are meaningful


@pytest.mark.parametrize("opset", [11, 17])
def test_export_opset_io_and_dynamic_batch(opset, tiny_model, make_batch, tmp_path):
    path = tmp_path / f"m{opset}.onnx"
    seconds = export_onnx(tiny_model, make_batch(2), path, IN, OUT, opset=opset, dynamic_batch=True)
    assert seconds >= 0 and path.is_file()
    assert not (tmp_path / f"m{opset}.onnx.tmp").exists()
    assert check_onnx(path) == "full_check_passed"
    assert onnx_io(path) == ([IN], [OUT], opset)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = make_batch(n, seed=n)
        y = sess.run([OUT], {IN: x})[0]
        assert y.shape == (n, 1, 16, 16)
        p = parity(_torch(tiny_model, x), y, rtol=1e-4, atol=1e-5)
        assert p["passed"] and p["max_rel_diff"] < 1e-4


def test_static_batch_export_rejects_other_batch(tiny_model, make_batch, tmp_path):
    path = tmp_path / "static.onnx"
    export_onnx(tiny_model, make_batch(2), path, IN, OUT, opset=17, dynamic_batch=False)
    dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_value == 2 and not dim.dim_param
    assert _ort(path, make_batch(2)).shape == (2, 1, 16, 16)
    with pytest.raises(Exception):
        _ort(path, make_batch(3))


def test_dynamic_axis_is_named_batch(tiny_onnx):
    m = onnx.load(str(tiny_onnx))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert m.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_metadata_props_stamped(tiny_onnx):
    props = {p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}
    assert props == {"zoo.model": "tiny", "zoo.answer": "42"}


def test_parity_torch_vs_ort(tiny_model, tiny_onnx, make_batch):
    x = make_batch(4, seed=11)
    ref, cand = _torch(tiny_model, x), _ort(tiny_onnx, x)
    p = parity(ref, cand, rtol=1e-4, atol=1e-5)
    assert p["passed"] is True
    assert p["max_rel_diff"] < 1e-4
    assert 0 <= p["mean_abs_diff"] <= p["max_abs_diff"]
    assert p["rtol"] == 1e-4 and p["atol"] == 1e-5


def test_parity_hand_made_arrays():
    ref = np.array([[1.0, -2.0], [4.0, 0.5]], np.float32)
    cand = np.array([[1.0, 2.0], [4.0, -0.5]], np.float32)     # two elements change sign
    p = parity(ref, cand, rtol=1e-4, atol=1e-5)
    assert p["max_abs_diff"] == pytest.approx(4.0)            # |2 - -2|
    assert p["max_rel_diff"] == pytest.approx(1.0)            # 4 / max|ref| = 4 / 4
    assert p["mean_abs_diff"] == pytest.approx(1.25)          # (0 + 4 + 0 + 1) / 4
    assert p["passed"] is False
    assert "decision_flips" not in p  # decisions are compared on predictions (zoo.stages.verify)


def test_parity_tolerance_is_relative_to_scale():
    ref = np.array([1.0, 2.0, 4.0])
    cand = np.array([1.0, 2.0, 4.5])                          # diff 0.5 = 0.125 * max|ref|
    assert parity(ref, cand, rtol=0.125, atol=0.0)["passed"] is True
    assert parity(ref, cand, rtol=0.1, atol=0.0)["passed"] is False     # 0.4 < 0.5
    assert parity(ref, cand, rtol=0.1, atol=0.1)["passed"] is True      # 0.1 + 0.4
    z = parity(np.zeros(3), np.array([0.0, 1e-6, 0.0]), rtol=0.0, atol=1e-5)
    assert z["passed"] and z["max_rel_diff"] == pytest.approx(1e-6)     # all-zero ref: scale 1


def test_parity_shape_mismatch():
    with pytest.raises(ZooError, match=r"shapes differ"):
        parity(np.zeros((2, 1)), np.zeros((1, 2)), 1e-4, 1e-5)


def test_check_onnx_truncated_file(tiny_onnx, tmp_path):
    bad = tmp_path / "truncated.onnx"
    data = tiny_onnx.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ZooError) as ei:
        check_onnx(bad)
    msg = str(ei.value)
    assert str(bad) in msg and "not a valid ONNX model" in msg and "\n" not in msg


def test_check_onnx_text_file(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is a text file, not a protobuf\n" * 5)
    with pytest.raises(ZooError) as ei:
        check_onnx(bad)
    assert str(bad) in str(ei.value) and "\n" not in str(ei.value)


def test_check_onnx_missing(tmp_path):
    with pytest.raises(ZooError, match="ONNX file not found"):
        check_onnx(tmp_path / "none.onnx")


def test_export_failure_is_zoo_error_and_leaves_nothing(tmp_path, make_batch):
    class Bad(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom\nsecond line")
    path = tmp_path / "bad" / "m.onnx"
    with pytest.raises(ZooError) as ei:
        export_onnx(Bad(), make_batch(1), path, IN, OUT, opset=17, dynamic_batch=True)
    assert str(path) in str(ei.value) and "export failed" in str(ei.value) and "\n" not in str(ei.value)
    assert not path.exists() and not path.with_name("m.onnx.tmp").exists()


def test_ensure_onnx_cache_hit_and_rebuild(tiny_model, make_batch, tmp_path):
    meta = {"zoo.model": "tiny", "zoo.weights_sha256": "ab" * 32}
    args = (tiny_model, make_batch(2), tmp_path, "k123", IN, OUT, 11, True, meta)
    first = ensure_onnx(*args)
    path = tmp_path / "export" / "k123" / "model.onnx"
    assert first["path"] == str(path) and path.is_file()
    assert first["cached"] is False
    assert first["checker"] == "full_check_passed"
    assert first["onnx_sha256"] == file_digest(path)
    assert first["opset"] == 11 and first["input_names"] == [IN] and first["output_names"] == [OUT]
    assert first["dynamic_batch"] is True and first["exporter"] == EXPORTER and first["format"] == "onnx"
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props} == meta

    mtime = path.stat().st_mtime_ns
    second = ensure_onnx(*args)
    assert second["cached"] is True and second["seconds"] == 0.0
    assert second["onnx_sha256"] == first["onnx_sha256"]
    assert path.stat().st_mtime_ns == mtime                  # not rewritten

    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])                 # damage the cache entry
    third = ensure_onnx(*args)
    assert third["cached"] is False
    assert check_onnx(path) == "full_check_passed"
    assert third["onnx_sha256"] == file_digest(path)
    assert onnx_io(path) == ([IN], [OUT], 11)


def test_export_key_depends_on_every_input():
    base = export_key("a" * 64, {"upsample": "bilinear"}, 17, True)
    assert base == export_key("a" * 64, {"upsample": "bilinear"}, 17, True)
    assert len(base) == 20
    others = {export_key("b" * 64, {"upsample": "bilinear"}, 17, True),
              export_key("a" * 64, {"upsample": "nearest"}, 17, True),
              export_key("a" * 64, {"upsample": "bilinear"}, 11, True),
              export_key("a" * 64, {"upsample": "bilinear"}, 17, False),
              export_key("a" * 64, {"upsample": "bilinear"}, 17, True, "unetpp")}
    assert base not in others and len(others) == 5
