"""Preprocessing, labelIds -> trainIds mapping, the source's order and image sizes as the adapter
checks them, the predictions (FACTS.md s.3)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.fastscnn.adapter import normalize
from zoo.datasets import open_source
from zoo.datasets.cityscapes import read_order
from zoo.errors import ZooError
from zoo.manifest import load_manifest

from .conftest import BUILTIN, SAMPLE_NAME, synthetic_tree, write_sample

M = load_manifest("fastscnn")
PREP = M.preprocess
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# FACTS.md s.3 (SegmenTron cityscapes.py `_key`): labelId -> trainId, everything else ignored
FACTS_TABLE = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
               26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def opened(data, ids_file=None, limit=None, tmp=None, split="evaluation"):
    """The source a run opens (zoo.datasets.open_source), checked by the adapter as a run checks it."""
    src = open_source(M, data, ids_file, limit, tmp, split)
    M.adapter().check_source(src)
    return src


def test_manifest_preprocessing_is_the_guides():
    assert PREP == {"mean": MEAN, "std": STD}                     # and nothing else: no resize
    assert M.data["source"] == {"labels": "labelIds"}
    assert M.input == {"name": "image", "shape": [3, 1024, 2048], "dtype": "float32", "layout": "NCHW"}
    assert M.output["name"] == "output1"


def test_normalize_hand_computed():
    px = np.array([[[255, 0, 128]]], dtype=np.uint8)             # R, G, B
    x = normalize(px, MEAN, STD)
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    assert x.shape == (3, 1, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0], expected, rtol=1e-6)
    assert abs(x[0, 0, 0] - 2.2489083) < 1e-6 and abs(x[1, 0, 0] + 2.0357143) < 1e-6


def test_normalize_equals_totensor_normalize_bitwise():
    """transforms.ToTensor (float32 / 255) + Normalize ((x - mean) / std, float32), redone in torch."""
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = torch.from_numpy(rgb).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    t = t.sub(torch.tensor(MEAN).view(3, 1, 1)).div(torch.tensor(STD).view(3, 1, 1))
    assert np.array_equal(normalize(rgb, MEAN, STD), t.numpy())


def test_read_is_pil_rgb_full_size(tmp_path):
    rgb = np.zeros((6, 10, 3), np.uint8)
    rgb[2, 3] = (255, 0, 128)
    label = np.full((6, 10), 7, np.uint8)
    write_sample(tmp_path, "aachen_000000_000001", rgb, label)
    s = opened(tmp_path, tmp=tmp_path / "cache").read("aachen_000000_000001")
    adapter = M.adapter()
    x, _ = adapter.preprocess(s)
    target = adapter.target(s)
    assert x.shape == (3, 6, 10) and x.dtype == np.float32     # no resize
    np.testing.assert_allclose(x[:, 2, 3], normalize(np.array([[[255, 0, 128]]], np.uint8), MEAN, STD)[:, 0, 0])
    assert (target == 0).all() and target.dtype == np.uint8    # labelId 7 (road) -> trainId 0


def test_grayscale_and_rgba_images_are_converted_like_pil(tmp_path):
    """convert('RGB'), as upstream: gray -> three equal channels, alpha dropped."""
    root = tmp_path / "cs"
    write_sample(root, "bonn_000000_000001", np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8))
    img = root / "leftImg8bit" / "val" / "bonn" / "bonn_000000_000001_leftImg8bit.png"
    Image.fromarray(np.full((4, 4), 77, np.uint8), "L").save(img)
    src = opened(root, tmp=tmp_path / "c")
    rgb = np.asarray(src.read("bonn_000000_000001").image)
    assert rgb.shape == (4, 4, 3) and (rgb == 77).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[...] = (10, 20, 30, 0)
    Image.fromarray(rgba, "RGBA").save(img)
    rgb = np.asarray(src.read("bonn_000000_000001").image)
    assert (rgb == (10, 20, 30)).all()
    np.testing.assert_array_equal(M.adapter().preprocess(src.read("bonn_000000_000001"))[0], normalize(rgb, MEAN, STD))


def test_label_ids_to_train_ids_every_id(tmp_path):
    """Every labelId 0..33 and 255 in one constructed labelIds map, against the FACTS table."""
    ids = np.r_[np.arange(34), 255].astype(np.uint8)
    label = np.tile(ids, (3, 1))                                  # (3, 35)
    write_sample(tmp_path, "lindau_000000_000019", np.zeros((3, 35, 3), np.uint8), label)
    target = M.adapter().target(opened(tmp_path, tmp=tmp_path / "c").read("lindau_000000_000019"))
    expected = np.array([FACTS_TABLE.get(int(i), 255) for i in ids], np.uint8)
    assert (target == expected[None]).all()
    assert sorted(set(FACTS_TABLE.values())) == list(range(19))
    # upstream: np.digitize(mask, range(-1, 34), right=True) into _key, -1 = ignored; same pixels
    key = np.array([-1] * 35)
    for label_id, train_id in FACTS_TABLE.items():
        key[label_id + 1] = train_id
    upstream = key[np.digitize(np.arange(34), np.arange(-1, 34), right=True)]
    assert np.array_equal(np.where(upstream < 0, 255, upstream), expected[:34])


def test_label_train_ids_used_when_no_label_ids(tmp_path):
    train = np.array([[0, 18, 255]], np.uint8)
    write_sample(tmp_path, "munster_000000_000019", np.zeros((1, 3, 3), np.uint8), None, train_ids=train)
    s = opened(tmp_path, tmp=tmp_path / "c").read("munster_000000_000019")
    assert np.array_equal(s.label, train) and s.info["label_kind"] == "labelTrainIds"


def test_label_of_other_size_is_an_error(tmp_path):
    write_sample(tmp_path, "ulm_000000_000019", np.zeros((4, 6, 3), np.uint8), np.zeros((4, 5), np.uint8))
    src = opened(tmp_path, tmp=tmp_path / "c")
    with pytest.raises(ZooError, match="label is 5x4, its image ulm_000000_000019_leftImg8bit.png is 6x4"):
        src.read("ulm_000000_000019")


def test_default_order_sorted_and_ids_file_order(tmp_path):
    names = ["munster_000001_000019", "frankfurt_000001_000002", "lindau_000000_000019", "frankfurt_000000_000294"]
    synthetic_tree(tmp_path / "cs", names, size=(4, 8))
    a = M.adapter()
    src = opened(tmp_path / "cs", tmp=tmp_path / "c")
    assert src.ids == sorted(names)                    # frankfurt, lindau, munster; by name within a city
    prov = src.provenance()
    assert prov["split"] == "evaluation (val)" and prov["preparation"]["order"] == "sorted by city then name"
    assert prov["preparation"]["image_sizes"] == [[4, 8]]
    assert a.metrics(src)[0].comparable is False
    # the guide's sort.log form (<name>_leftImg8bit.png), comments and blank lines
    order = tmp_path / "sort.log"
    order.write_text("# order\n" + "\n".join(f"{n}_leftImg8bit.png" for n in names[::-1]) + "\n\n")
    src = opened(tmp_path / "cs", order, tmp=tmp_path / "c")
    assert src.ids == names[::-1]
    prov = src.provenance()
    assert prov["ids_file"] == str(order) and prov["preparation"]["order"] == f"as listed in {order}"
    assert prov["expected_samples"] is None and prov["num_samples"] == 4   # a user's order: not the split
    assert f"[evaluated in order: as listed in {order}]" in a.metrics(src)[0].description
    src = opened(tmp_path / "cs", order, 2, tmp=tmp_path / "c")
    assert src.ids == names[::-1][:2] and src.provenance()["limit"] == 2


def test_guide_order_file():
    split = M.data["splits"]["guide_order"]
    names = read_order(M.dir / split["ids_file"])
    assert len(names) == 500 == split["expected_samples"] and len(set(names)) == 500
    cities = [n.split("_")[0] for n in names]
    assert {c: cities.count(c) for c in set(cities)} == {"frankfurt": 267, "lindau": 59, "munster": 174}
    assert cities[0] == "munster" and names != sorted(names)    # not the default sorted order
    assert SAMPLE_NAME in names
    assert M.adapter().guide_order() == names


def test_order_file_naming_a_missing_image(tmp_path):
    synthetic_tree(tmp_path / "cs", ["bonn_000000_000019"], size=(4, 8))
    (tmp_path / "ids.txt").write_text("bonn_000000_000019\nbonn_000009_000019\n")
    with pytest.raises(ZooError, match=r"ids.txt: 1 of 2 listed samples have no image .*_leftImg8bit.png: bonn_000009_000019$"):
        opened(tmp_path / "cs", tmp_path / "ids.txt", tmp=tmp_path / "c")


def test_mixed_image_sizes_are_refused(tmp_path):
    names = ["bonn_000000_000019", "bonn_000001_000019", "bonn_000002_000019"]
    synthetic_tree(tmp_path / "cs", names, size=(8, 16), sizes={names[2]: (8, 20)})
    src = open_source(M, tmp_path / "cs", None, None, tmp_path / "c")
    with pytest.raises(ZooError) as ei:
        M.adapter().check_source(src)
    msg = str(ei.value)
    assert f"{names[2]}_leftImg8bit.png: image is 20x8 but {names[0]}_leftImg8bit.png is 16x8" in msg
    assert "one image size" in msg
    M.adapter().check_source(src.subset(names[:2]))            # the first two alone: one size


def test_builtin_sample_and_export_size_option(tmp_path):
    a = M.adapter()
    src = opened(None, tmp=tmp_path)
    assert src.root.resolve() == BUILTIN.resolve() and src.ids == [SAMPLE_NAME]
    assert list(src.image_sizes()) == [(128, 256)]
    s = src.read(SAMPLE_NAME)
    x, _ = a.preprocess(s)
    target = a.target(s)
    assert x.shape == (3, 128, 256) and target.shape == (128, 256)
    assert set(np.unique(target)) <= set(range(19)) | {255} and (target < 19).mean() > 0.5
    prov = src.provenance()
    assert prov["builtin"] is True and prov["expected_samples"] is None and prov["split"] == "builtin (val)"
    assert prov["preparation"]["image_sizes"] == [[128, 256]]
    # the option is never changed (the export is keyed by the input shape): auto takes any one
    # size, an explicit size must be the data's
    assert a.options["export_hw"] == "auto"
    with pytest.raises(TypeError):
        a.options["export_hw"] = "128x256"
    synthetic_tree(tmp_path / "other", ["bonn_000000_000019"], size=(8, 16))
    a.check_source(open_source(M, tmp_path / "other", None, None, tmp_path))
    M.adapter(export_hw="128x256").check_source(src)
    with pytest.raises(ZooError, match="images are 128x256 .* export_hw=1024x2048"):
        M.adapter(export_hw="1024x2048").check_source(src)
    # the guide's AvgPool needs a pyramid pooling input of 6 x 6 at least: 128x256 gives 4x8
    with pytest.raises(ZooError, match=r"images are 128x256 \(HxW\): ppm=guide_avgpool: .* fewer than bin 6"):
        M.adapter(ppm="guide_avgpool").check_source(src)
    synthetic_tree(tmp_path / "large", ["bonn_000000_000019"], size=(192, 192))   # PPM input 6x6
    M.adapter(ppm="guide_avgpool").check_source(open_source(M, tmp_path / "large", None, None, tmp_path))


def test_predictions_are_both_argmaxes_as_uint8():
    """`labels`: argmax of the logits; `labels_trunc`: argmax of their truncation (upstream's
    pixAcc), both numpy's rule (first index on ties)."""
    rng = np.random.default_rng(4)
    out = (rng.standard_normal((19, 16, 24)) * 2).astype(np.float32)
    out[:, 0, :4] = 0.5
    out[3, 0, :4] = 0.9                                          # plain argmax 3, truncated all 0 -> 0
    p = M.adapter().postprocess(out, None)
    assert sorted(p) == ["labels", "labels_trunc"] and all(v.dtype == np.uint8 for v in p.values())
    np.testing.assert_array_equal(p["labels"], out.argmax(0))
    np.testing.assert_array_equal(p["labels_trunc"], np.trunc(out).argmax(0))
    assert (p["labels"][0, :4] == 3).all() and (p["labels_trunc"][0, :4] == 0).all()
