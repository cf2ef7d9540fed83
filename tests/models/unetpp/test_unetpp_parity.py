"""ONNX export parity (ONNX Runtime vs PyTorch), with BatchNorm statistics calibrated on real
images so the logits are not the flat output of an untrained network."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.unetpp.model import NestedUNet
from tests.zootest import calibrate_bn
from zoo.export import check_onnx, export_onnx, onnx_io, parity
from zoo.manifest import load_manifest

from .conftest import MODEL_DIR

M = load_manifest("unetpp")


@pytest.fixture(scope="module")
def real_batch(tmp_path_factory) -> np.ndarray:
    ds = M.adapter().dataset(None, None, None, tmp_path_factory.mktemp("cache"))
    return np.stack([ds.preprocess(ds.read(i))[0] for i in ds.ids])  # the 16 built-in images


def calibrated(upsample: str, batch: np.ndarray, seed: int = 0) -> NestedUNet:
    torch.manual_seed(seed)
    x = torch.from_numpy(batch)
    return calibrate_bn(NestedUNet(upsample=upsample), [x, x])


@pytest.mark.parametrize("upsample,opset", [("bilinear", 17), ("bilinear", 11), ("nearest", 11)])
def test_export_parity_calibrated(tmp_path, real_batch, upsample, opset):
    net = calibrated(upsample, real_batch)
    x = real_batch[:4]
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    # the test means something only if the logits are spread out (not a flat untrained output)
    assert ref.std() > 0.05 and np.ptp(ref) > 1.0
    thr = float(np.median(ref))  # a decision boundary through the bulk of the pixels
    path = tmp_path / "m.onnx"
    export_onnx(net, x, path, "actual_input_1", "output1", opset, dynamic_batch=True, metadata={"zoo.model": "unetpp"})
    assert check_onnx(path) == "full_check_passed"
    assert onnx_io(path) == (["actual_input_1"], ["output1"], opset)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):  # dynamic batch axis
        batch = real_batch[:n]
        got = sess.run(["output1"], {"actual_input_1": batch})[0]
        with torch.no_grad():
            want = net(torch.from_numpy(batch)).numpy()
        p = parity(want, got, rtol=1e-4, atol=1e-5, decision=lambda a: a > thr)
        assert p["passed"], p
        assert p["max_rel_diff"] < 1e-4
        assert p["decision_flips"] <= max(1, int(1e-4 * want.size)), p


def test_shipped_checkpoint_parity(tmp_path, real_batch):
    adapter = M.adapter()
    net = adapter.build()
    adapter.load_weights(net, MODEL_DIR / "weights" / "unetpp_dsb2018.pth")
    net.eval()
    path = tmp_path / "m.onnx"
    export_onnx(net, real_batch[:2], path, "actual_input_1", "output1", 17, True)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"actual_input_1": real_batch})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(real_batch)).numpy()
    p = parity(want, got, 1e-4, 1e-5, decision=lambda a: a > 0)
    assert p["passed"] and p["decision_flips"] == 0, p
    # ... and the guide's threshold (raw logits > 0.5) flips no pixel either
    assert int(((want > 0.5) != (got > 0.5)).sum()) == 0


def test_variants_export_different_graphs(tmp_path, real_batch):
    """The guide's nearest patch is a different model: exported outputs differ from bilinear."""
    outs = {}
    for mode in ("bilinear", "nearest"):
        net = calibrated("bilinear", real_batch)  # same weights and statistics for both
        net.up = NestedUNet(upsample=mode).up
        path = tmp_path / f"{mode}.onnx"
        export_onnx(net, real_batch[:1], path, "actual_input_1", "output1", 11, True)
        outs[mode] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"actual_input_1": real_batch[:4]})[0]
    rel = np.abs(outs["bilinear"] - outs["nearest"]).max() / np.abs(outs["bilinear"]).max()
    assert rel > 1e-2
