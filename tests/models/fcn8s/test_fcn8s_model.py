"""The network is mmseg 1.2.2's own FCN from the packaged config: official key names and shapes,
strict loading of the mmcv container, SyncBN reverted, the export wrapper equal to mmseg's own
inference."""
from __future__ import annotations

import pytest
import torch

from tests.zootest import reference_keys
from zoo.errors import ZooError
from zoo.manifest import load_manifest

from .conftest import MODEL_DIR, SHARED, structured_images


def test_state_dict_matches_the_official_key_list(model):
    expected = reference_keys(MODEL_DIR / "state_dict_keys.txt")
    got = {k: list(v.shape) for k, v in model.seg.state_dict().items()}
    assert len(expected) == 358
    assert got == expected


def test_same_key_list_as_shared_reference():
    ref = SHARED / "reference" / "keys" / "fcn_keys.txt"
    if not ref.is_file():
        pytest.skip(f"{ref} not present (the shared reference folder is optional)")
    assert reference_keys(ref) == reference_keys(MODEL_DIR / "state_dict_keys.txt")


def test_no_syncbn_left_and_eval_mode(model):
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    # one per running_mean of the official key list: 53 backbone + 3 decode head + 3 auxiliary head
    assert len(norms) == 59 == sum(1 for k in reference_keys(MODEL_DIR / "state_dict_keys.txt") if k.endswith("running_mean"))
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert not model.training


def test_strict_load_roundtrip_and_mismatch(model, checkpoint, tmp_path):
    adapter = load_manifest("fcn8s").adapter()
    fresh = adapter.build()
    adapter.load_weights(fresh, checkpoint)
    for k, v in model.seg.state_dict().items():
        assert torch.equal(fresh.seg.state_dict()[k], v), k
    sd = torch.load(checkpoint, weights_only=True)["state_dict"]
    sd.pop("decode_head.conv_seg.bias")
    sd["decode_head.extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": sd}, bad)
    with pytest.raises(ZooError, match=r"bad\.pth: state_dict does not match the model: 1 missing: "
                                       r"decode_head\.conv_seg\.bias; 1 unexpected: decode_head\.extra\.weight"):
        adapter.load_weights(adapter.build(), bad)


def test_wrapper_equals_mmseg_inference(model):
    """Our forward (backbone -> head -> bilinear to the input size) against mmseg's own
    EncoderDecoder.inference/predict on the same normalised batch."""
    from mmseg.structures import SegDataSample
    x = torch.from_numpy(structured_images(1, (200, 264), seed=5))
    meta = {"img_shape": (200, 264), "ori_shape": (200, 264), "pad_shape": (200, 264), "padding_size": [0, 0, 0, 0]}
    with torch.no_grad():
        ours = model(x)
        theirs = model.seg.inference(x, [meta])
        pred = model.seg.predict(x, [SegDataSample(metainfo=meta)])[0].pred_sem_seg.data
    assert ours.shape == (1, 21, 200, 264)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert torch.equal(ours.argmax(1), pred)
    # spread-out logits: the argmax is not one class everywhere
    assert len(torch.unique(ours.argmax(1))) >= 3


def test_argmax_in_graph_option():
    a = load_manifest("fcn8s").adapter(argmax_in_graph=True)
    net = a.build().eval()
    with torch.no_grad():
        y = net(torch.zeros(1, 3, 64, 64))
    assert y.dtype == torch.int64 and y.shape == (1, 1, 64, 64)
    with pytest.raises(ZooError, match="argmax_in_graph=true needs protocol=guide"):
        load_manifest("fcn8s").adapter(argmax_in_graph=True, protocol="upstream").build()
    with pytest.raises(ZooError, match="protocol must be one of"):
        _ = load_manifest("fcn8s").adapter(protocol="mmseg").protocol
