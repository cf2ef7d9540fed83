"""DSB2018 preparation, model-input preprocessing, targets and the two protocols' predictions
against hand-computed values (FACTS.md s.5)."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from models.unetpp.adapter import normalize
from zoo.datasets import Sample, open_source
from zoo.datasets.dsb2018 import prepare_sample, source_files
from zoo.errors import ZooError
from zoo.ids import read_ids
from zoo.manifest import load_manifest
from zoo.metrics.binary import BinaryIoU

from .conftest import BUILTIN, builtin_ids

M = load_manifest("unetpp")
PREP = M.preprocess


def _sample(root, sid, bgra, masks):
    d = root / "stage1_train" / sid
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    cv2.imwrite(str(d / "images" / f"{sid}.png"), bgra)
    for i, m in enumerate(masks):
        cv2.imwrite(str(d / "masks" / f"m{i}.png"), m)
    return d


def test_normalize_hand_computed():
    # one pixel, BGR = (255, 0, 128); ImageNet mean/std applied to the BGR channels as-is,
    # then divided by 255 once more (upstream's extra astype(float32) / 255)
    px = np.array([[[255, 0, 128]]], dtype=np.uint8)
    x = normalize(px, PREP["mean"], PREP["std"], PREP["max_pixel_value"], PREP["extra_divide"])
    expected = [((255 / 255 - 0.485) / 0.229) / 255,   # B with the "R" mean/std
                ((0 / 255 - 0.456) / 0.224) / 255,     # G
                ((128 / 255 - 0.406) / 0.225) / 255]   # R with the "B" mean/std
    assert x.shape == (3, 1, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0], expected, rtol=1e-6)
    assert abs(expected[0] - 0.0088192) < 1e-6  # = (1 - 0.485) / 0.229 / 255: the tiny input range the model was trained on


def test_prepare_sample_hand_computed(tmp_path):
    sid = "abc"
    h = w = 8
    bgra = np.zeros((h, w, 4), np.uint8)
    bgra[...] = (50, 100, 200, 255)                       # B, G, R, alpha
    left = np.zeros((h, w), np.uint8)
    left[:, :4] = 255                                      # a nucleus covering the left half
    faint = np.zeros((h, w), np.uint8)
    faint[:, 4:] = 127                                     # not > 127: must not count
    corner = np.zeros((h, w), np.uint8)
    corner[0, 7] = 128                                     # > 127: counts
    _sample(tmp_path, sid, bgra, [left, faint, corner])
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "masks" / "0").mkdir(parents=True)
    prepare_sample(tmp_path, sid, out, 96)

    img = cv2.imread(str(out / "images" / f"{sid}.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (96, 96, 3)                        # alpha dropped
    assert (img == (50, 100, 200)).all()                   # BGR order kept, constant stays constant
    mask = cv2.imread(str(out / "masks" / "0" / f"{sid}.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (96, 96) and mask.dtype == np.uint8
    # bilinear 8 -> 96 (scale 12): source column c covers output columns 12c..12c+11 centred at
    # 12c+5.5; output columns left of the edge centre of pixel 3 (x <= 3*12+5.5) stay 255
    assert (mask[:, :42] == 255).all()
    assert (mask[24:, 54:90] == 0).all()                   # right half stays 0 away from the corner
    edge = mask[50, 42:54]
    assert ((edge > 0) & (edge < 255)).all()               # fractional edge: not strictly binary
    assert np.all(np.diff(edge.astype(int)) <= 0)
    assert mask[0, 95] > 0                                 # the single >127 corner pixel survives


def test_read_ids(tmp_path):
    assert read_ids(load_manifest("unetpp").dir / "val_ids.txt")[:2] == [
        "619429303c1af7540916509fe7900cf483eba4391b06aac87ff7f66ca1ab6483",
        "08ae2741df2f5ac815c0f272a8c532b5167ee853be9b939b9b8b7fa93560868a"]
    assert len(read_ids(load_manifest("unetpp").dir / "val_ids.txt")) == 134
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(ZooError, match="duplicate ids"):
        read_ids(tmp_path / "dup.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ZooError, match="empty"):
        read_ids(tmp_path / "empty.txt")


def test_source_files_of_an_id(tmp_path):
    sid = builtin_ids()[0]
    image, masks = source_files(BUILTIN, sid)
    assert image == BUILTIN / "stage1_train" / sid / "images" / f"{sid}.png"
    assert masks == sorted((BUILTIN / "stage1_train" / sid / "masks").glob("*.png")) and len(masks) > 1
    with pytest.raises(ZooError, match="path separator"):
        source_files(BUILTIN, f"../{sid}")
    with pytest.raises(ZooError, match=f"{BUILTIN / 'stage1_train' / 'nope' / 'images' / 'nope.png'}: image not found"):
        source_files(BUILTIN, "nope")


def test_builtin_source_order_limit_cache_and_model_input(tmp_path):
    adapter = M.adapter()
    source = open_source(M, None, None, 5, tmp_path)
    assert source.ids == builtin_ids()[:5]
    assert source.preparation()["cached"] is False
    sample = source.read(source.ids[0])
    x, meta = adapter.preprocess(sample)
    assert x.shape == (3, 96, 96) and x.dtype == np.float32 and meta is None
    assert -0.0085 < x.min() < x.max() < 0.0106             # ((bgr/255-mean)/std)/255 range
    np.testing.assert_array_equal(x, normalize(sample.image, PREP["mean"], PREP["std"], PREP["max_pixel_value"],
                                               PREP["extra_divide"]))
    target = adapter.target(sample)
    assert target.shape == (96, 96) and target.dtype == bool and target.any() and not target.all()
    np.testing.assert_array_equal(adapter.target(source.read_label(source.ids[0])), target)  # no image needed
    again = open_source(M, None, None, 5, tmp_path)
    assert again.preparation()["cached"] is True and again.prepared == source.prepared
    prov = source.provenance()
    assert prov["num_samples"] == 5 and prov["limit"] == 5 and prov["builtin"] is True
    assert prov["expected_samples"] is None                 # a slice: not comparable to 134


def test_target_is_mask_over_255_strictly_above_half():
    # the prepared mask is uint8 (bilinear edges make it not strictly binary): 127/255 = 0.498 is
    # background, 128/255 = 0.502 is a nucleus
    label = np.array([[0, 127], [128, 255]], np.uint8)
    target = M.adapter().target(Sample("x", None, label))
    assert target.dtype == bool and target.tolist() == [[False, False], [True, True]]


def _predict(logits) -> dict:
    return M.adapter().postprocess(np.asarray(logits, np.float32).reshape(1, 4, 4), None)


def test_raw_logit_threshold_versus_sigmoid():
    # logit 0.3 everywhere: the guide thresholds the raw logit (0.3 > 0.5 is false), upstream the
    # sigmoid (sigmoid(0.3) = 0.5744 > 0.5)
    p = _predict(np.full(16, 0.3))
    assert set(p) == {"guide", "upstream"}
    assert p["guide"].dtype == p["upstream"].dtype == bool and p["guide"].shape == (4, 4)
    assert 1 / (1 + math.exp(-0.3)) > 0.5
    assert not p["guide"].any() and p["upstream"].all()
    target = np.ones((4, 4), bool)
    guide, upstream = M.adapter().metrics(None)
    guide.update(p, target)                                 # I = 0, U = 16
    upstream.update(p, target)                              # I = U = 16
    assert guide.compute()["iou"] == pytest.approx(1e-5 / (16 + 1e-5), rel=1e-9)
    assert upstream.compute()["iou"] == pytest.approx(1.0)


def test_thresholds_are_strict():
    # raw: a logit of exactly 0.5 is negative; sigmoid: logit 0 -> 0.5 is negative
    p = _predict([0.5, 0.0, 0.51, 1e-3] * 4)
    assert p["guide"].sum() == 4                            # only the 0.51 column
    assert p["upstream"].sum() == 12                        # 0.5, 0.51, 1e-3 are > logit(0.5) = 0; 0.0 is not
    assert p["guide"][:, 2].all() and not p["upstream"][:, 1].any()


def test_the_two_protocols():
    guide, upstream = M.adapter().metrics(None)
    assert isinstance(guide, BinaryIoU) and isinstance(upstream, BinaryIoU)
    assert (guide.name, guide.key, guide.aggregate) == ("guide", "guide", "image")
    assert (upstream.name, upstream.key, upstream.aggregate, upstream.group) == ("upstream", "upstream", "batch", 16)
    protos = M.reference["protocols"]
    assert guide.description == protos["guide"]["description"]
    assert upstream.description == protos["upstream"]["description"]
