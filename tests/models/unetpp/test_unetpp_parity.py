"""ONNX export parity (ONNX Runtime vs PyTorch), with BatchNorm statistics calibrated on real
images so the logits are not the flat output of an untrained network; the shipped checkpoint's
decisions compared as the verify stage compares them (the adapter's predictions)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.unetpp.model import NestedUNet
from tests.zootest import calibrate_bn
from zoo.datasets import open_source
from zoo.onnx_export import check_onnx, export_onnx, onnx_io, parity
from zoo.manifest import load_manifest
from zoo.stages.verify import compare, tolerance

from .conftest import MODEL_DIR

M = load_manifest("unetpp")


@pytest.fixture(scope="module")
def real_batch(tmp_path_factory) -> np.ndarray:
    source = open_source(M, None, None, None, tmp_path_factory.mktemp("cache"))
    adapter = M.adapter()
    return np.stack([adapter.preprocess(source.read(i))[0] for i in source.ids])  # the 16 built-in images


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
        p = parity(want, got, rtol=1e-4, atol=1e-5)
        assert p["passed"], p
        assert p["max_rel_diff"] < 1e-4
        flips = int(((want > thr) != (got > thr)).sum())
        assert flips <= max(1, int(1e-4 * want.size)), (flips, p)


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
    v = compare(want, got, adapter, [None] * len(want), tolerance(M, "fp32"))
    assert v["passed"] and v["numerics_passed"] and v["decision_flips"] == 0, v
    # neither protocol's mask (guide: logits > 0.5, upstream: sigmoid > 0.5) differs in any pixel
    assert v["decisions"] == {k: {"flips": 0, "decisions": want.size, "fraction": 0.0} for k in ("guide", "upstream")}


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
