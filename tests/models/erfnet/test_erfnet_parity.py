"""ONNX export parity (ONNX Runtime vs PyTorch, compared as the verify stage compares them: numerics
and the predictions' flipped pixels) on the calibrated ERFNet, opsets 17 and 11, dynamic batch; and
the guide's BN-weight clamp (modify_bn_weights.py) as an edit of the exported file."""
from __future__ import annotations

import copy
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from models.erfnet.adapter import GUIDE_BN_REGEX
from models.erfnet.model import batchnorms
from zoo.errors import ZooError
from zoo.onnx_export import apply_edit, check_onnx, export_onnx, onnx_io, parity
from zoo.manifest import load_manifest
from zoo.stages.verify import compare

from .conftest import make_erfnet, smooth_images

M = load_manifest("erfnet")
TOL = M.verify["tolerance"]["fp32"]
IN, OUT = M.input["name"], M.output["name"]


def verify(reference, candidate) -> dict:
    """The verify stage's comparison of two outputs of a batch (the adapter's predictions)."""
    return compare(reference, candidate, M.adapter(), [None] * len(reference), TOL)


def run_ort(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run([OUT], {IN: x})[0]


def run_torch(net, x):
    with torch.inference_mode():
        return net(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return smooth_images(3, 128, 256, seed=11).numpy()


@pytest.fixture(scope="module")
def exported(erfnet, batch, tmp_path_factory) -> dict:
    out = {}
    for opset in (17, 11):
        path = tmp_path_factory.mktemp(f"onnx{opset}") / "erfnet.onnx"
        export_onnx(erfnet, batch[:1], path, IN, OUT, opset, dynamic_batch=True, metadata={"zoo.model": "erfnet"})
        out[opset] = path
    return out


@pytest.mark.parametrize("opset", [17, 11])
def test_export_parity_calibrated(erfnet, batch, exported, opset):
    path = exported[opset]
    assert check_onnx(path) == "full_check_passed"
    assert onnx_io(path) == ([IN], [OUT], opset)
    ref = run_torch(erfnet, batch)
    # meaningful only if the logits are spread out and many classes win somewhere
    assert ref.std() > 0.1 and np.ptp(ref) > 2.0
    assert len(np.unique(ref.argmax(1))) >= 10
    for n in (1, 3):  # dynamic batch axis
        got = run_ort(path, batch[:n])
        p = verify(ref[:n], got)
        assert p["passed"], p
        assert p["decisions"]["labels"]["fraction"] <= TOL["max_flip_fraction"] == 1e-3, p
    # ONNX Runtime is as close to the float64 result as PyTorch's own float32 is (the tolerance
    # is the model's float32 rounding, not the exporter's)
    ref64 = run_torch(copy.deepcopy(erfnet).double(), batch[:1].astype(np.float64))
    err_ort = np.abs(got[:1] - ref64).max()
    err_torch = np.abs(ref[:1] - ref64).max()
    assert err_ort <= 3 * err_torch + 1e-6, (err_ort, err_torch)


def clamped_copy(net, which):
    """A torch model whose BN gammas are clamped as the guide's script clamps them."""
    out = copy.deepcopy(net)
    with torch.no_grad():
        for name, bn in batchnorms(out):
            if which(name):
                g = bn.weight
                g.copy_(torch.where(g.abs() > 0.01, g, torch.full_like(g, 0.01)))
    return out


def loaded_adapter(option, erfnet, tmp_path):
    """The adapter with the calibrated weights loaded through load_weights (as a run does)."""
    from .conftest import official_style_state_dict
    ck = tmp_path / "ck.pth"
    torch.save(official_style_state_dict(erfnet), ck)
    adapter = M.adapter(bn_weight_clamp=option)
    net = adapter.build()
    adapter.load_weights(net, ck)
    return adapter, net.eval()


@pytest.mark.parametrize("option", [True, "regex"])
def test_bn_weight_clamp_equals_clamped_torch_model(erfnet, batch, exported, tmp_path, option):
    adapter, net = loaded_adapter(option, erfnet, tmp_path)
    which = (lambda name: True) if option is True else (lambda name: name.endswith(".bn"))
    in_scope = [bn for name, bn in batchnorms(net) if which(name)]
    assert len(in_scope) == (39 if option is True else 5)
    small = [int((bn.weight.abs() <= 0.01).sum()) for bn in in_scope]
    assert sum(small) > 0  # the calibrated model has small gammas for the clamp to change

    edited = tmp_path / "edited.onnx"
    info = apply_edit(exported[11], edited, lambda model: adapter.edit_onnx(model, net))
    assert info["initializers_changed"] == sum(1 for s in small if s) and info["values_changed"] == sum(small)
    assert info["bn_nodes"] == 5
    assert info["bn_layers_considered"] == len(in_scope)
    assert info["bn_folded_into_conv"] == (34 if option is True else 0)

    x = batch[:1]
    got = run_ort(edited, x)
    want = run_torch(clamped_copy(net, which), x)
    p = verify(want, got)
    assert p["passed"], p
    effect = parity(run_torch(net, x), got, TOL["rtol"], TOL["atol"])
    assert not effect["passed"] and effect["max_rel_diff"] > 1e-2  # the edit changes numerics
    # the unedited file still matches the unclamped model (the edit wrote a copy)
    assert parity(run_torch(net, x), run_ort(exported[11], x), TOL["rtol"], TOL["atol"])["passed"]


def test_regex_mode_is_the_guides_script_verbatim(erfnet, batch, exported, tmp_path):
    """The guide's loop (every initializer whose name re.search-es `.*bn.*weight`, float32,
    where(|v| > 0.01, v, 0.01)) on our export gives the same file values as the adapter's edit."""
    adapter, net = loaded_adapter("regex", erfnet, tmp_path)
    ours = onnx.load(str(exported[17]))
    adapter.edit_onnx(ours, net)
    guide = onnx.load(str(exported[17]))
    names = []
    for t in guide.graph.initializer:
        if re.search(GUIDE_BN_REGEX, t.name):
            v = numpy_helper.to_array(t).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(np.where(np.abs(v) > 0.01, v, np.float32(0.01)).astype(np.float32), t.name))
            names.append(t.name)
    assert sorted(names) == sorted(f"{m}.bn.weight" for m in ("encoder.initial_block", "encoder.layers.0",
                                                              "encoder.layers.6", "decoder.layers.0", "decoder.layers.3"))
    a = {t.name: numpy_helper.to_array(t) for t in ours.graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in guide.graph.initializer}
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_edit_refuses_a_file_from_another_model(batch, exported, tmp_path):
    other = make_erfnet(seed=5)
    adapter, other_net = loaded_adapter(True, other, tmp_path)
    model = onnx.load(str(exported[17]))
    with pytest.raises(ZooError, match="does not hold .* folded with"):
        adapter.edit_onnx(model, other_net)
    with pytest.raises(ZooError, match="needs the loaded PyTorch module"):   # nothing to recompute from
        adapter.edit_onnx(onnx.load(str(exported[17])), None)
