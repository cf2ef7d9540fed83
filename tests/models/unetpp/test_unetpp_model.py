"""NestedUNet: upstream key names and shapes, strict loading of the shipped checkpoint, options."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.unetpp.model import NestedUNet
from zoo.errors import ZooError
from zoo.fileutil import file_digest
from tests.zootest import reference_keys
from zoo.manifest import load_manifest

from .conftest import MODEL_DIR


def test_state_dict_matches_upstream_key_list():
    ref = reference_keys(MODEL_DIR / "state_dict_keys.txt")
    sd = NestedUNet().state_dict()
    assert list(sd) == list(ref)  # same names, same order as upstream's module tree
    assert {k: list(v.shape) for k, v in sd.items()} == ref
    assert len(ref) == 212


def test_shipped_checkpoint_loads_strictly_and_is_the_documented_file():
    m = load_manifest("unetpp")
    ck = m.weights["checkpoints"]["builtin"]
    path = MODEL_DIR / ck["path"]
    assert file_digest(path) == ck["sha256"]
    assert file_digest(path, "md5") == ck["md5"]
    adapter = m.adapter()
    model = adapter.build()
    adapter.load_weights(model, path)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_wrong_keys_and_shapes_are_listed(tmp_path):
    adapter = load_manifest("unetpp").adapter()
    sd = torch.load(MODEL_DIR / "weights" / "unetpp_dsb2018.pth", map_location="cpu", weights_only=True)
    sd["conv0_0.conv1.weightX"] = sd.pop("conv0_0.conv1.weight")
    sd["final.weight"] = torch.zeros(2, 32, 1, 1)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    with pytest.raises(ZooError) as ei:
        adapter.load_weights(adapter.build(), bad)
    msg = str(ei.value)
    assert "\n" not in msg and str(bad) in msg
    assert "1 missing: conv0_0.conv1.weight" in msg
    assert "1 unexpected: conv0_0.conv1.weightX" in msg
    assert "final.weight [2, 32, 1, 1] != [1, 32, 1, 1]" in msg


def test_module_prefix_and_container_are_accepted(tmp_path):
    adapter = load_manifest("unetpp").adapter()
    sd = torch.load(MODEL_DIR / "weights" / "unetpp_dsb2018.pth", map_location="cpu", weights_only=True)
    wrapped = tmp_path / "dp.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, wrapped)
    model = adapter.build()
    adapter.load_weights(model, wrapped)
    assert torch.equal(model.final.weight, sd["final.weight"])


def test_nearest_upsampling_is_the_guides_different_variant():
    sd = torch.load(MODEL_DIR / "weights" / "unetpp_dsb2018.pth", map_location="cpu", weights_only=True)
    bil, near = NestedUNet(upsample="bilinear").eval(), NestedUNet(upsample="nearest").eval()
    bil.load_state_dict(sd)
    near.load_state_dict(sd)
    assert isinstance(near.up, torch.nn.Upsample) and near.up.mode == "nearest"
    assert bil.up.mode == "bilinear" and bil.up.align_corners is True
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0)) * 0.01
    with torch.no_grad():
        a, b = bil(x), near(x)
    assert a.shape == b.shape == (2, 1, 96, 96)
    rel = float((a - b).abs().max() / a.abs().max())
    assert rel > 1e-2  # not a drop-in replacement: the outputs really differ


def test_options_and_unknown_option():
    m = load_manifest("unetpp")
    net = m.adapter(deep_supervision=True).build()
    outs = net.eval()(torch.zeros(1, 3, 32, 32))
    assert isinstance(outs, list) and len(outs) == 4 and outs[0].shape == (1, 1, 32, 32)
    assert m.adapter(upsample="nearest").variant.endswith("upsample=nearest")
    with pytest.raises(ZooError, match="unknown model option"):
        m.adapter(upsampling="nearest")
    with pytest.raises(ValueError, match="upsample must be one of"):
        NestedUNet(upsample="bicubic")


def test_param_count():
    # FACTS.md: 9,170,625 counting BN running statistics (buffers) too.
    net = NestedUNet()
    params = sum(p.numel() for p in net.parameters())
    bn_stats = sum(b.numel() for n, b in net.named_buffers() if "running_" in n)
    assert params + bn_stats == 9_170_625
    assert np.isclose(params, 9_163_329)
