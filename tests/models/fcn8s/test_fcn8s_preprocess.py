"""Pre- and postprocessing against mmcv's own functions and the guide's formulas."""
from __future__ import annotations

import mmcv
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.fcn8s.adapter import (guide_geometry, guide_input, guide_restore, rescale_size, upstream_input,
                                  upstream_prediction)
from zoo.datasets.voc import read_label as read_voc_label
from zoo.errors import ZooError
from zoo.manifest import load_manifest
from zoo.mm import MEAN, STD, imnormalize as normalize

from .conftest import BUILTIN, PALETTE


UPSTREAM_SCALE = tuple(load_manifest("fcn8s").preprocess["upstream_scale"])


def test_upstream_scale_is_the_packaged_configs():
    """The manifest's upstream_scale is the Resize of mmseg's own VOC test pipeline."""
    from zoo.mm import load_config
    from models.fcn8s.adapter import CONFIG
    (resize,) = [t for t in load_config("mmseg", CONFIG).test_pipeline if t["type"] == "Resize"]
    assert UPSTREAM_SCALE == tuple(resize["scale"]) == (2048, 512) and resize["keep_ratio"] is True


def bgr(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_normalize_equals_mmcv_imnormalize():
    img = bgr(37, 53)
    ref = mmcv.imnormalize(img, np.array(MEAN, np.float64), np.array(STD, np.float64), to_rgb=True)
    np.testing.assert_allclose(normalize(img), ref, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("w,h", [(500, 375), (375, 500), (500, 333), (334, 500), (486, 500), (211, 180)])
def test_upstream_size_equals_mmcv_imrescale(w, h):
    got = mmcv.imrescale(bgr(h, w), (2048, 512))
    assert rescale_size(w, h, UPSTREAM_SCALE) == (got.shape[1], got.shape[0])
    x = upstream_input(bgr(h, w), UPSTREAM_SCALE)
    ref = mmcv.imnormalize(got, np.array(MEAN, np.float64), np.array(STD, np.float64), to_rgb=True)
    np.testing.assert_allclose(x, ref.transpose(2, 0, 1), rtol=1e-6, atol=1e-5)


def test_guide_letterbox_numbers():
    g = guide_geometry(500, 375, 500)
    assert (g["new_w"], g["new_h"], g["pad_left"], g["pad_top"]) == (500, 375, 0, 62)
    assert (g["crop_left"], g["crop_top"]) == (0, 62)
    g = guide_geometry(333, 500, 500)  # scale 1: no resize, centred horizontally
    assert (g["new_w"], g["new_h"], g["pad_left"], g["pad_top"]) == (333, 500, 83, 0)
    g = guide_geometry(211, 180, 500)  # upscaled: floor of the scaled sizes
    assert g["new_w"] == 500 and g["new_h"] == int(np.floor(180 * 500 / 211))


def test_guide_input_is_resize_normalise_centre_pad():
    img = bgr(375, 500, seed=3)
    x, g = guide_input(img, 500)
    assert x.shape == (3, 500, 500) and x.dtype == np.float32
    inner = mmcv.imnormalize(mmcv.imresize(img, (500, 375)), np.array(MEAN, np.float64), np.array(STD, np.float64))
    np.testing.assert_allclose(x[:, 62:437], inner.transpose(2, 0, 1), rtol=1e-6, atol=1e-5)
    assert not x[:, :62].any() and not x[:, 437:].any()


def test_guide_restore_crops_symmetrically_and_truncates():
    """The guide crops [pad : 500 - pad] (376 rows for a 375-row image) and resizes the label map
    bilinearly as float, truncating: a 1-pixel class boundary can become a lower class id."""
    lab = np.zeros((500, 500), np.int64)
    lab[62:250] = 3
    lab[250:438] = 7
    g = guide_geometry(500, 375, 500)
    out = guide_restore(lab, g, 375, 500)
    assert out.shape == (375, 500) and out.dtype == np.int32
    crop = lab[62:438].astype(np.float32)
    ref = F.interpolate(torch.from_numpy(crop)[None, None], size=(375, 500), mode="bilinear",
                        align_corners=False)[0, 0].to(torch.int32).numpy()
    np.testing.assert_array_equal(out, ref)
    assert set(np.unique(out)) <= {3, 4, 5, 6, 7}  # interpolated boundary values, truncated


def test_upstream_prediction_resizes_logits_before_argmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(21, 64, 86)).astype(np.float32)
    out = upstream_prediction(logits, 47, 63)
    ref = F.interpolate(torch.from_numpy(logits)[None], size=(47, 63), mode="bilinear", align_corners=False)[0].argmax(0)
    np.testing.assert_array_equal(out, ref.numpy())


def test_read_voc_label_real_palette_png():
    lab = read_voc_label(BUILTIN / "VOC2012" / "SegmentationClass" / "2007_000033.png")
    assert lab.dtype == np.uint8 and lab.shape == (366, 500)
    assert set(np.unique(lab)) == {0, 1, 255}  # background, aeroplane, border
    ref = mmcv.imread(str(BUILTIN / "VOC2012" / "SegmentationClass" / "2007_000033.png"), flag="unchanged", backend="pillow")
    np.testing.assert_array_equal(lab, ref)


def test_read_voc_label_rejects_unexpected_values_and_modes(tmp_path):
    from PIL import Image
    lab = np.zeros((10, 10), np.uint8)
    lab[0, 0] = 50
    im = Image.fromarray(lab, "P")
    im.putpalette(PALETTE)
    im.save(tmp_path / "bad.png")
    with pytest.raises(ZooError, match=r"bad\.png: unexpected label values \[50\]"):
        read_voc_label(tmp_path / "bad.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8), "RGB").save(tmp_path / "rgb.png")
    with pytest.raises(ZooError, match=r"rgb\.png: label must be a palette"):
        read_voc_label(tmp_path / "rgb.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ZooError, match=r"junk\.png: unreadable label"):
        read_voc_label(tmp_path / "junk.png")
