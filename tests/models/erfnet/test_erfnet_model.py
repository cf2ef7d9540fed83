"""ERFNet: upstream key names and shapes, architecture facts, strict loading of an official-style
checkpoint ('module.' prefix, optional keys absent) and one-line failures on wrong keys/shapes."""
from __future__ import annotations

import pytest
import torch

from models.erfnet.model import ERFNet, batchnorms
from zoo.errors import ZooError
from tests.zootest import reference_keys
from zoo.manifest import load_manifest

from .conftest import MODEL_DIR, SHARED, official_style_state_dict

M = load_manifest("erfnet")


def test_state_dict_matches_reference_key_list():
    ref = reference_keys(MODEL_DIR / "state_dict_keys.txt")
    sd = ERFNet(20).state_dict()
    assert list(sd) == list(ref)  # same names, same order as upstream's module tree
    assert {k: list(v.shape) for k, v in sd.items()} == ref
    assert len(ref) == 345
    shared = SHARED / "reference" / "keys" / "erfnet_keys.txt"
    if shared.is_file():  # the copy shipped with the model is the reference list, unchanged
        assert (MODEL_DIR / "state_dict_keys.txt").read_text() == shared.read_text()


def test_architecture_facts():
    net = ERFNet(20)
    # FACTS.md s.2: 2,073,428 = parameters + BN running statistics
    params = sum(p.numel() for p in net.parameters())
    stats = sum(b.numel() for n, b in net.named_buffers() if "running_" in n)
    assert params + stats == 2_073_428
    bns = batchnorms(net)
    assert len(bns) == 39 and all(bn.eps == 1e-3 for _, bn in bns)
    enc = net.encoder.layers
    assert [type(m).__name__ for m in enc].count("non_bottleneck_1d") == 13
    assert [enc[i].conv3x1_2.dilation[0] for i in range(7, 15)] == [2, 4, 8, 16, 2, 4, 8, 16]
    assert enc[7].conv1x3_2.padding == (0, 2) and enc[14].conv3x1_2.padding == (16, 0)
    assert enc[1].dropout.p == 0.1 and net.decoder.layers[1].dropout.p == 0.0
    up = net.decoder.layers[0].conv
    assert isinstance(up, torch.nn.ConvTranspose2d) and (up.stride, up.padding, up.output_padding) == ((2, 2), (1, 1), (1, 1))
    x = torch.rand(2, 3, 64, 128)
    with torch.no_grad():
        out = net.eval()(x)
        assert out.shape == (2, 20, 64, 128)  # logits at the input resolution
        # the encoder's output_conv is not on the path of the full network
        net.encoder.output_conv.weight.fill_(1e3)
        assert torch.equal(net(x), out)


def test_official_style_checkpoint_loads_strictly(tmp_path, erfnet):
    sd = official_style_state_dict(erfnet)
    assert all(k.startswith("module.") for k in sd)
    assert not any("num_batches_tracked" in k or "encoder.output_conv" in k for k in sd)
    path = tmp_path / "official_style.pth"
    torch.save(sd, path)
    adapter = M.adapter()
    net = adapter.build()
    adapter.load_weights(net, path)
    for k, v in erfnet.state_dict().items():
        if not k.endswith("num_batches_tracked") and not k.startswith("encoder.output_conv."):
            assert torch.equal(net.state_dict()[k], v), k
    # a complete, unprefixed state_dict loads too
    full = tmp_path / "full.pth"
    torch.save(erfnet.state_dict(), full)
    adapter.load_weights(adapter.build(), full)


@pytest.mark.parametrize("damage,needles", [
    (lambda sd: sd.__setitem__("module.decoder.output_conv.weight", torch.zeros(16, 19, 2, 2)),
     ["1 wrong shape: decoder.output_conv.weight [16, 19, 2, 2] != [16, 20, 2, 2]"]),
    (lambda sd: sd.__setitem__("module.decoder.layers.6.bn.weight", torch.ones(16)),
     ["1 unexpected: decoder.layers.6.bn.weight"]),
    (lambda sd: sd.pop("module.encoder.layers.3.bn2.running_var"),
     ["1 missing: encoder.layers.3.bn2.running_var"]),
    (lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("module.decoder.output_conv")],
     ["2 missing: decoder.output_conv.weight, decoder.output_conv.bias"]),  # only encoder's may be absent
])
def test_wrong_keys_and_shapes_are_listed(tmp_path, erfnet, damage, needles):
    sd = official_style_state_dict(erfnet)
    damage(sd)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    adapter = M.adapter()
    with pytest.raises(ZooError) as ei:
        adapter.load_weights(adapter.build(), path)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"{path}: state_dict does not match the model")
    for n in needles:
        assert n in msg, msg


def test_options():
    assert M.adapter().variant == "bn_weight_clamp=False"
    assert M.adapter().export_edit_key() == "" and M.adapter().edit_onnx(None, None) is None
    assert M.adapter(bn_weight_clamp=True).export_edit_key() == "bnclamp0.01"
    assert M.adapter(bn_weight_clamp="regex").export_edit_key() == "bnclamp0.01-regex"
    for bad in (1, "yes", 0.01):
        with pytest.raises(ZooError, match="option bn_weight_clamp must be one of false, true, regex"):
            M.adapter(bn_weight_clamp=bad)
    with pytest.raises(ZooError, match="unknown model option"):
        M.adapter(num_classes=19)
