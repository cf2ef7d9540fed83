"""The guide's preprocessing (FACTS.md s.2) against hand-computed values: PIL RGB, torchvision
Resize(512) size rule with PIL's antialiased bilinear, ToTensor [0,1] without mean/std; labels
convert('P') (value-preserving), nearest resize, 255 -> 19; trainIds derived from labelIds;
the Cityscapes source as the manifest opens it (layout, pairing by name, bad files) feeding the
adapter's preprocess and target."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models.erfnet.adapter import image_to_input, label_to_target, resized_size
from zoo.datasets import open_source
from zoo.datasets.cityscapes import open_rgb
from zoo.errors import ZooError
from zoo.manifest import load_manifest

from .conftest import BUILTIN, label_ids_from_train_ids, write_cityscapes

M = load_manifest("erfnet")
SHORT = M.preprocess["short_side"]   # 512: torchvision Resize(512)


def test_resize_rule_is_torchvisions():
    # shorter side -> 512, longer side int(512 * long / short) (truncated, torchvision's rule)
    assert resized_size(2048, 1024, SHORT) == (1024, 512)
    assert resized_size(256, 128, SHORT) == (1024, 512)     # the built-in sample is upscaled
    assert resized_size(1000, 700, SHORT) == (731, 512)     # 731.43 -> 731
    assert resized_size(700, 1000, SHORT) == (512, 731)
    assert resized_size(512, 512, SHORT) == (512, 512)
    assert resized_size(2049, 1024, SHORT) == (1024, 512)   # 1024.5 -> 1024


def test_constant_colour_rgb_order_and_scale():
    rgb = np.empty((1024, 2048, 3), np.uint8)
    rgb[...] = (10, 120, 255)                        # R, G, B
    x = image_to_input(Image.fromarray(rgb), SHORT)
    assert x.shape == (3, 512, 1024) and x.dtype == np.float32 and x.flags.c_contiguous
    # a constant colour resizes to the same constant; channel 0 is red; ToTensor is /255, no mean/std
    for c, v in enumerate((10, 120, 255)):
        assert (x[c] == np.float32(v) / np.float32(255)).all()
    assert x.max() == 1.0


def test_bilinear_is_pils_antialiased_filter():
    # columns alternate in pairs: 80, 80, 160, 160, ...; a 2x downscale with PIL's bilinear
    # (triangle filter over 4 source pixels, weights 1/8, 3/8, 3/8, 1/8) gives 100 / 140,
    # where a plain 2-tap bilinear (cv2 INTER_LINEAR) would give 80 / 160
    row = np.where(np.arange(2048) % 4 < 2, 80, 160).astype(np.uint8)
    rgb = np.repeat(np.repeat(row[None, :, None], 1024, 0), 3, 2)
    x = image_to_input(Image.fromarray(rgb), SHORT) * 255
    interior = x[0, 5, 2:-2]
    np.testing.assert_allclose(interior[0::2], 100, atol=0.51)
    np.testing.assert_allclose(interior[1::2], 140, atol=0.51)


def test_upscale_of_a_small_image():
    rgb = np.zeros((128, 256, 3), np.uint8)
    rgb[:, 128:] = 200
    x = image_to_input(Image.fromarray(rgb), SHORT)
    assert x.shape == (3, 512, 1024)
    assert (x[:, :, :500] == 0).all() and (x[:, :, 524:] == np.float32(200) / 255).all()
    edge = x[0, 0, 508:516]
    assert ((edge > 0) & (edge < np.float32(200) / 255)).any() and (np.diff(edge) >= 0).all()


def test_convert_P_of_an_8bit_label_is_value_preserving():
    lab = np.arange(256, dtype=np.uint8).reshape(16, 16)
    buf = io.BytesIO()
    Image.fromarray(lab).save(buf, "PNG")
    im = Image.open(io.BytesIO(buf.getvalue()))
    assert im.mode == "L"
    assert np.array_equal(np.array(im.convert("P")), lab)


def test_label_nearest_and_relabel():
    lab = np.zeros((1024, 2048), np.uint8)
    lab[:, :] = (np.arange(2048) % 19).astype(np.uint8)[None, :]   # a different class each column
    lab[0::2, :] = 255                                             # even rows void
    t = label_to_target(lab, SHORT)
    assert t.shape == (512, 1024) and t.dtype == np.uint8
    # PIL nearest at scale 2 samples source pixel floor((i + 0.5) * 2) = 2i + 1: odd rows/columns
    assert np.array_equal(t, (np.arange(1, 2048, 2) % 19).astype(np.uint8)[None, :].repeat(512, 0))
    lab2 = lab.copy()
    lab2[1::2, :] = 255                                            # now odd rows void too
    t2 = label_to_target(lab2, SHORT)
    assert (t2 == 19).all()                                        # 255 -> 19 (never left as 255)
    small = np.array([[0, 255], [18, 7]], np.uint8).repeat(64, 0).repeat(128, 1)   # 128x256
    t3 = label_to_target(small, SHORT)
    assert t3.shape == (512, 1024) and set(np.unique(t3)) == {0, 19, 18, 7}
    assert (t3[:256, :512] == 0).all() and (t3[:256, 512:] == 19).all() and (t3[256:, 512:] == 7).all()


def _sample(h=1024, w=2048, seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    lab = rng.choice(np.r_[np.arange(19), 255].astype(np.uint8), size=(h, w))
    return rgb, lab


def test_source_reads_real_layout_pairs_by_name_and_derives_train_ids(tmp_path):
    a, b, c = _sample(seed=1), _sample(seed=2), _sample(seed=3)
    write_cityscapes(tmp_path / "t", {"zurich_000000_000001": a, "aachen_000000_000002": b})
    write_cityscapes(tmp_path / "t", {"aachen_000000_000001": c}, kinds=("labelIds",))  # only labelIds
    adapter = M.adapter()
    src = open_source(M, tmp_path / "t", None, None, tmp_path / "cache")
    adapter.check_source(src)
    assert src.ids == ["aachen_000000_000001", "aachen_000000_000002", "zurich_000000_000001"]  # city, then name
    for sid, (rgb, lab) in zip(src.ids, (c, b, a)):
        s = src.read(sid)
        x, meta = adapter.preprocess(s)
        t = adapter.target(s)
        assert x.shape == (3, 512, 1024)
        np.testing.assert_array_equal(x, image_to_input(Image.fromarray(rgb), SHORT))
        want = lab[1::2, 1::2].copy()
        if sid == "aachen_000000_000001":
            assert set(np.unique(label_ids_from_train_ids(lab))) <= {0, *range(7, 34)}  # really labelIds
            assert s.info["label_kind"] == "labelIds"
        want[want == 255] = 19
        np.testing.assert_array_equal(t, want)
        np.testing.assert_array_equal(adapter.target(src.read_label(sid)), want)  # scoring reads the label only
    prov = src.provenance()
    assert prov["num_samples"] == 3 and prov["expected_samples"] == 500 and prov["split"] == "evaluation (val)"
    assert prov["preparation"]["labels"] == {"labelTrainIds": 2, "labelIds (trainIds derived)": 1}
    assert prov["preparation"]["labels_preferred"] == "labelTrainIds"
    # --limit and --ids-file (an explicit order of names)
    assert open_source(M, tmp_path / "t", None, 2, tmp_path / "cache").ids == src.ids[:2]
    ids = tmp_path / "ids.txt"
    ids.write_text("zurich_000000_000001\naachen_000000_000001\n")
    assert open_source(M, tmp_path / "t", ids, None, tmp_path / "cache").ids == [
        "zurich_000000_000001", "aachen_000000_000001"]
    ids.write_text("zurich_000000_000001\nzurich_000000_000001\n")
    with pytest.raises(ZooError, match=r"ids.txt: duplicate ids: lines 1 and 2 \('zurich_000000_000001'\)"):
        open_source(M, tmp_path / "t", ids, None, tmp_path / "cache")


def test_prediction_is_the_argmax_over_all_20_outputs():
    rng = np.random.default_rng(0)
    out = rng.standard_normal((20, 6, 10)).astype(np.float32)
    out[19, 0, :3] = 9.0                                           # void predicted: kept as 19
    out[:, 5, 5] = 1.0                                             # a tie of every class: the first
    p = M.adapter().postprocess(out, None)
    assert list(p) == ["labels"] and p["labels"].dtype == np.uint8
    np.testing.assert_array_equal(p["labels"], out.argmax(0))
    assert (p["labels"][0, :3] == 19).all() and p["labels"][5, 5] == 0


def test_builtin_sample_is_the_familys_shared_one(tmp_path):
    adapter = M.adapter()
    src = open_source(M, None, None, None, tmp_path)
    assert src.root.resolve() == BUILTIN.resolve() and src.ids == ["frankfurt_000000_000294"]
    s = src.read(src.ids[0])
    x, _ = adapter.preprocess(s)
    t = adapter.target(s)
    assert x.shape == (3, 512, 1024) and 0.0 <= x.min() and x.max() <= 1.0
    assert t.shape == (512, 1024) and set(np.unique(t)) <= set(range(20)) and (t == 19).any()
    prov = src.provenance()
    assert prov["builtin"] is True and prov["num_samples"] == 1


def test_bad_files(tmp_path):
    rgb, lab = _sample(128, 256)
    root = write_cityscapes(tmp_path / "t", {"ulm_000000_000001": (rgb, lab)})
    img = root / "leftImg8bit/val/ulm/ulm_000000_000001_leftImg8bit.png"
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 2])
    src = open_source(M, root, None, None, tmp_path / "c")
    with pytest.raises(ZooError) as ei:
        src.read(src.ids[0])
    assert str(ei.value).startswith(f"{img}: unreadable or truncated image") and "\n" not in str(ei.value)
    img.write_text("not a png")
    with pytest.raises(ZooError, match="unreadable or truncated image"):
        open_rgb(img)
    with pytest.raises(ZooError, match="image not found"):
        open_rgb(tmp_path / "none.png")
    # a label whose size differs from its image
    Image.fromarray(rgb).save(img)
    lab_path = root / "gtFine/val/ulm/ulm_000000_000001_gtFine_labelTrainIds.png"
    Image.fromarray(lab[:64]).save(lab_path)
    with pytest.raises(ZooError, match="label is 256x64, its image ulm_000000_000001_leftImg8bit.png is 256x128"):
        src.read(src.ids[0])
    # trainId values that cannot be trainIds
    Image.fromarray(np.full((128, 256), 40, np.uint8)).save(lab_path)
    with pytest.raises(ZooError, match="unexpected trainId values"):
        src.read(src.ids[0])
