"""Full-size (1024x2048) ONNX export parity with calibrated BatchNorm statistics: ONNX Runtime vs
PyTorch for opsets 17 and 11 (compared as the verify stage compares them: numerics and the pixels
of both predictions that flip), dynamic batch, the main output named `output1`, upstream's
AdaptiveAvgPool2d numerics kept by the exact export, and the guide's patch exported faithfully
(but different)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models.fastscnn.model import FastSCNN
from zoo.onnx_export import check_onnx, export_onnx, onnx_io, parity
from zoo.manifest import load_manifest
from zoo.stages.verify import compare

from .conftest import FULL, calibrated_model, structured_images
from .test_fastscnn_ppm import ReferencePPM

M = load_manifest("fastscnn")
TOL = M.verify["tolerance"]["fp32"]


def verify(reference, candidate) -> dict:
    """The verify stage's comparison of two outputs of a batch (the adapter's predictions)."""
    return compare(reference, candidate, M.adapter(), [None] * len(reference), TOL)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """A calibrated network exported once at 1024x2048 (opset 17, example batch 1), two full-size
    inputs, and both runtimes' main outputs for the batch of 2 (dynamic batch axis)."""
    net = calibrated_model(0)
    x = structured_images(2, FULL, seed=7)
    with torch.no_grad():
        want = net(torch.from_numpy(x))[0].numpy()
    path = tmp_path_factory.mktemp("onnx") / "fastscnn17.onnx"
    export_onnx(net, x[:1], path, "image", "output1", 17, dynamic_batch=True, metadata={"zoo.model": "fastscnn"})
    sess = _session(path)
    got = sess.run(["output1"], {"image": x})[0]
    return {"net": net, "x": x, "want": want, "path": path, "sess": sess, "got": got}


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _check_graph(path, opset):
    assert check_onnx(path) == "full_check_passed"
    ins, outs, got_opset = onnx_io(path)
    assert ins == ["image"] and outs[0] == "output1" and len(outs) == 3 and got_opset == opset  # + 2 aux
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not {o for o in ops if "Pool" in o}, ops           # exact PPM: MatMuls, no (adaptive) pooling


def test_export_parity_full_size_opset17_dynamic_batch(full):
    want, got = full["want"], full["got"]
    # the test means something only if the logits are spread out (not a flat untrained output)
    assert want.std() > 0.1 and np.ptp(want) > 2.0
    assert len(np.unique(want.argmax(1))) >= 5
    _check_graph(full["path"], 17)
    assert [o.name for o in full["sess"].get_outputs()][0] == "output1"
    assert got.shape == (2, 19, *FULL)                         # exported with batch 1, run with 2
    assert (TOL["rtol"], TOL["atol"]) == (1e-4, 1e-5)
    p = verify(want, got)
    assert p["passed"] and p["max_rel_diff"] < 1e-4, p
    assert p["decisions"]["labels"]["flips"] <= max(1, int(1e-5 * want[:, 0].size)), p
    assert p["decisions"]["labels_trunc"]["fraction"] <= TOL["max_flip_fraction"], p
    one = full["sess"].run(["output1"], {"image": full["x"][1:]})[0]
    assert np.abs(one - got[1:]).max() / np.abs(got).max() < 1e-5


def test_export_parity_opset11(tmp_path):
    """The guide's opset 11 (at 512x1024 to keep the test short: PPM input 16x32, non-divisible bins)."""
    net = calibrated_model(1)
    x = structured_images(2, (512, 1024), seed=3)
    path = tmp_path / "m11.onnx"
    export_onnx(net, x[:1], path, "image", "output1", 11, dynamic_batch=True)
    _check_graph(path, 11)
    got = _session(path).run(["output1"], {"image": x})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x))[0].numpy()
    assert want.std() > 0.1
    p = verify(want, got)
    assert p["passed"] and p["max_rel_diff"] < 1e-4, p


def test_exact_export_keeps_adaptive_avg_pool_numerics(full):
    """The exported exact model == the same weights with upstream's AdaptiveAvgPool2d PPM (written
    independently in test_fastscnn_ppm), at the real 1024x2048 (PPM input 32x64)."""
    net, x = full["net"], full["x"]
    ref = FastSCNN()
    ref.load_state_dict(net.state_dict())
    ref_ppm = ReferencePPM()
    with torch.no_grad():
        for mine, theirs in zip(net.ppm.convs, ref_ppm.branches):
            theirs[0].weight.copy_(mine.conv.weight)
            theirs[1].load_state_dict(mine.bn.state_dict())
    ref.global_feature_extractor.ppm = ref_ppm
    with torch.no_grad():
        upstream = ref.eval()(torch.from_numpy(x[:1]))[0].numpy()
    p = verify(upstream, full["got"][:1])
    assert p["passed"] and p["max_rel_diff"] < 1e-4, p


def test_guide_avgpool_exports_faithfully_but_differs(tmp_path, full):
    """The guide's variant (opset 11, as its pth2onnx) exports its own numerics faithfully, and they
    are not upstream's: relative difference > 1e-3 (at 512x1024 to keep the test short: PPM input
    16x32, bins 3 and 6 not divisible, as at 1024x2048; the 32x64 case is test_fastscnn_ppm's)."""
    net = full["net"]
    x = structured_images(1, (512, 1024), seed=5)
    guide = FastSCNN(ppm="guide_avgpool").eval()
    guide.load_state_dict(net.state_dict())
    path = tmp_path / "guide.onnx"
    export_onnx(guide, x, path, "image", "output1", 11, dynamic_batch=True)
    assert guide.ppm.guide_frozen_at == (16, 32)               # frozen at the export's (first) call
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("AveragePool") == 4
    got = _session(path).run(["output1"], {"image": x})[0]
    with torch.no_grad():
        own = guide(torch.from_numpy(x))[0].numpy()
        exact = net(torch.from_numpy(x))[0].numpy()
    assert parity(own, got, 1e-4, 1e-5)["passed"]
    rel = np.abs(got - exact).max() / np.abs(exact).max()
    assert rel > 1e-3, rel
