"""FastSCNN: upstream key names and shapes, strict loading (+ its one-line failure), options."""
from __future__ import annotations

import pytest
import torch

from models.fastscnn.model import FastSCNN, ppm_input_size
from zoo.errors import ZooError
from tests.zootest import reference_keys
from zoo.manifest import load_manifest

from .conftest import MODEL_DIR, SHARED

M = load_manifest("fastscnn")


def test_state_dict_matches_upstream_key_list():
    ref = reference_keys(MODEL_DIR / "state_dict_keys.txt")
    sd = FastSCNN(num_classes=19, aux=True).state_dict()
    assert list(sd) == list(ref)  # same names, same order as upstream's module tree
    assert {k: list(v.shape) for k, v in sd.items()} == ref
    assert len(ref) == 284
    prefixes = {}
    for k in ref:
        prefixes[k.split(".")[0]] = prefixes.get(k.split(".")[0], 0) + 1
    assert prefixes == {"learning_to_downsample": 30, "global_feature_extractor": 192, "feature_fusion": 20,
                        "classifier": 26, "auxlayer1": 8, "auxlayer2": 8}  # FACTS.md s.3


def test_key_list_is_the_shared_reference():
    shared = SHARED / "reference" / "keys" / "fastscnn_keys.txt"
    if not shared.is_file():
        pytest.skip(f"{shared} not available (../shared is optional)")
    assert (MODEL_DIR / "state_dict_keys.txt").read_text() == shared.read_text()


def test_param_count():
    # FACTS.md: 1,233,769 counting BatchNorm running statistics too
    net = FastSCNN()
    params = sum(p.numel() for p in net.parameters())
    bn_stats = sum(b.numel() for n, b in net.named_buffers() if "running_" in n)
    assert params + bn_stats == 1_233_769


def test_forward_returns_main_and_two_aux_at_input_size():
    net = FastSCNN().eval()
    with torch.no_grad():
        outs = net(torch.zeros(2, 3, 128, 256))
    assert isinstance(outs, tuple) and len(outs) == 3
    assert all(o.shape == (2, 19, 128, 256) for o in outs)
    with torch.no_grad():
        only = FastSCNN(aux=False).eval()(torch.zeros(1, 3, 128, 256))
    assert isinstance(only, tuple) and len(only) == 1
    assert ppm_input_size(1024, 2048) == (32, 64) and ppm_input_size(128, 256) == (4, 8)


def test_aux_outputs_false_runs_the_main_output_only(checkpoint):
    """Same weights (the aux heads still load strictly), same main output, aux heads not run."""
    a = M.adapter(aux_outputs=False)
    net = a.build()
    a.load_weights(net, checkpoint)
    full = M.adapter().build()
    M.adapter().load_weights(full, checkpoint)
    assert list(net.state_dict()) == list(full.state_dict())
    x = torch.randn(1, 3, 128, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        main_only, everything = net.eval()(x), full.eval()(x)
    assert len(main_only) == 1 and len(everything) == 3
    assert torch.equal(main_only[0], everything[0])


def test_strict_load_roundtrip_container_and_prefix(checkpoint, tmp_path):
    adapter = M.adapter()
    sd = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for i, obj in enumerate([sd, {"state_dict": {"module." + k: v for k, v in sd.items()}}]):
        path = tmp_path / f"w{i}.pth"
        torch.save(obj, path)
        net = adapter.build()
        adapter.load_weights(net, path)
        for k, v in net.state_dict().items():
            assert torch.equal(v, sd[k]), k


def test_wrong_keys_and_shapes_are_listed_on_one_line(checkpoint, tmp_path):
    adapter = M.adapter()
    sd = torch.load(checkpoint, map_location="cpu", weights_only=True)
    sd.pop("auxlayer2.4.bias")
    sd["classifier.conv.1.weightX"] = sd.pop("classifier.conv.1.weight")
    sd["learning_to_downsample.conv.bn.weight"] = torch.ones(31)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    with pytest.raises(ZooError) as ei:
        adapter.load_weights(adapter.build(), bad)
    msg = str(ei.value)
    assert "\n" not in msg and str(bad) in msg
    assert "2 missing: classifier.conv.1.weight, auxlayer2.4.bias" in msg
    assert "1 unexpected: classifier.conv.1.weightX" in msg
    assert "learning_to_downsample.conv.bn.weight [31] != [32]" in msg


def test_other_prefixes_and_aux_less_checkpoints_are_refused(checkpoint, tmp_path):
    adapter = M.adapter()
    sd = torch.load(checkpoint, map_location="cpu", weights_only=True)
    path = tmp_path / "model_prefix.pth"
    torch.save({"model." + k: v for k, v in sd.items()}, path)  # nothing looser than 'module.'
    with pytest.raises(ZooError, match="284 missing"):
        adapter.load_weights(adapter.build(), path)
    path = tmp_path / "noaux.pth"
    torch.save({k: v for k, v in sd.items() if not k.startswith("auxlayer")}, path)
    with pytest.raises(ZooError, match="16 missing: auxlayer1.0.weight"):
        adapter.load_weights(adapter.build(), path)


def test_options_and_unknown_option():
    assert {k: v["default"] for k, v in M.model["options"].items()} == {"num_classes": 19, "aux": True, "aux_outputs": True, "ppm": "exact",
                                  "export_hw": "auto"}
    a = M.adapter(ppm="guide_avgpool")
    assert "ppm=guide_avgpool" in a.variant
    assert a.build().ppm.mode == "guide_avgpool"
    with pytest.raises(ZooError, match="unknown model option"):
        M.adapter(pool="exact")
    with pytest.raises(ValueError, match="ppm must be one of"):
        FastSCNN(ppm="adaptive")
    with pytest.raises(ZooError, match="option ppm must be one of exact, guide_avgpool, got 'avg'"):
        M.adapter(ppm="avg")
    with pytest.raises(ZooError, match="option aux must be true or false, got .yes."):
        M.adapter(aux="yes")
