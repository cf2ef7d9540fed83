"""DSB2018 preparation and model-input preprocessing against hand-computed values (FACTS.md s.5)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.unetpp.adapter import normalize, prepare_sample, read_ids
from zoo.errors import ZooError
from zoo.manifest import load_manifest

from .conftest import builtin_ids

PREP = load_manifest("unetpp").data["preprocessing"]


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


def test_builtin_dataset_order_limit_and_cache(tmp_path):
    adapter = load_manifest("unetpp").adapter()
    ds = adapter.dataset(None, None, 5, tmp_path)
    assert ds.ids == builtin_ids()[:5]
    assert ds.preparation["cached"] is False
    x, target = ds.preprocess(ds.read(ds.ids[0]))
    assert x.shape == (3, 96, 96) and x.dtype == np.float32
    assert -0.0085 < x.min() < x.max() < 0.0106             # ((bgr/255-mean)/std)/255 range
    assert target.shape == (96, 96) and 0.0 <= target.min() and target.max() <= 1.0
    again = adapter.dataset(None, None, 5, tmp_path)
    assert again.preparation["cached"] is True and again.prepared == ds.prepared
    prov = ds.provenance()
    assert prov["num_samples"] == 5 and prov["limit"] == 5 and prov["builtin"] is True
    assert prov["expected_samples"] is None                 # a slice: not comparable to 134
