"""Preprocessing, labelIds -> trainIds mapping, dataset order and sizes (FACTS.md s.3)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.fastscnn.adapter import normalize, read_order
from zoo.errors import ZooError
from zoo.manifest import load_manifest

from .conftest import BUILTIN, SAMPLE_NAME, synthetic_tree, write_sample

M = load_manifest("fastscnn")
PREP = M.data["preprocessing"]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# FACTS.md s.3 (SegmenTron cityscapes.py `_key`): labelId -> trainId, everything else ignored
FACTS_TABLE = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
               26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def test_manifest_preprocessing_is_the_guides():
    assert PREP["mean"] == MEAN and PREP["std"] == STD and PREP["resize"] == "none"
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
    ds = M.adapter().dataset(tmp_path, None, None, tmp_path / "cache")
    x, target = ds.preprocess(ds.read("aachen_000000_000001"))
    assert x.shape == (3, 6, 10) and x.dtype == np.float32     # no resize
    np.testing.assert_allclose(x[:, 2, 3], normalize(np.array([[[255, 0, 128]]], np.uint8), MEAN, STD)[:, 0, 0])
    assert (target == 0).all() and target.dtype == np.uint8    # labelId 7 (road) -> trainId 0


def test_grayscale_and_rgba_images_are_converted_like_pil(tmp_path):
    """convert('RGB'), as upstream: gray -> three equal channels, alpha dropped."""
    root = tmp_path / "cs"
    write_sample(root, "bonn_000000_000001", np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8))
    img = root / "leftImg8bit" / "val" / "bonn" / "bonn_000000_000001_leftImg8bit.png"
    Image.fromarray(np.full((4, 4), 77, np.uint8), "L").save(img)
    ds = M.adapter().dataset(root, None, None, tmp_path / "c")
    rgb, _ = ds.read("bonn_000000_000001")
    assert rgb.shape == (4, 4, 3) and (rgb == 77).all()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[...] = (10, 20, 30, 0)
    Image.fromarray(rgba, "RGBA").save(img)
    rgb, _ = ds.read("bonn_000000_000001")
    assert (rgb == (10, 20, 30)).all()


def test_label_ids_to_train_ids_every_id(tmp_path):
    """Every labelId 0..33 and 255 in one constructed labelIds map, against the FACTS table."""
    ids = np.r_[np.arange(34), 255].astype(np.uint8)
    label = np.tile(ids, (3, 1))                                  # (3, 35)
    write_sample(tmp_path, "lindau_000000_000019", np.zeros((3, 35, 3), np.uint8), label)
    ds = M.adapter().dataset(tmp_path, None, None, tmp_path / "c")
    _, target = ds.read("lindau_000000_000019")
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
    ds = M.adapter().dataset(tmp_path, None, None, tmp_path / "c")
    assert np.array_equal(ds.read("munster_000000_000019")[1], train)


def test_label_of_other_size_is_an_error(tmp_path):
    write_sample(tmp_path, "ulm_000000_000019", np.zeros((4, 6, 3), np.uint8), np.zeros((4, 5), np.uint8))
    ds = M.adapter().dataset(tmp_path, None, None, tmp_path / "c")
    with pytest.raises(ZooError, match="label is 5x4, image is 6x4"):
        ds.read("ulm_000000_000019")


def test_default_order_sorted_and_ids_file_order(tmp_path):
    names = ["munster_000001_000019", "frankfurt_000001_000002", "lindau_000000_000019", "frankfurt_000000_000294"]
    synthetic_tree(tmp_path / "cs", names, size=(4, 8))
    a = M.adapter()
    ds = a.dataset(tmp_path / "cs", None, None, tmp_path / "c")
    assert ds.ids == sorted(names)                    # frankfurt, lindau, munster; by name within a city
    assert ds.provenance()["split"] == "val, sorted" and ds.guide_order is False
    # the guide's sort.log form (<name>_leftImg8bit.png), comments and blank lines
    order = tmp_path / "sort.log"
    order.write_text("# order\n" + "\n".join(f"{n}_leftImg8bit.png" for n in names[::-1]) + "\n\n")
    ds = a.dataset(tmp_path / "cs", order, None, tmp_path / "c")
    assert ds.ids == names[::-1]
    prov = ds.provenance()
    assert prov["ids_file"] == str(order) and prov["split"] == "val, ids-file order"
    assert prov["preparation"]["order"] == f"as listed in {order}"
    assert prov["expected_samples"] == 500 and prov["num_samples"] == 4
    ds = a.dataset(tmp_path / "cs", order, 2, tmp_path / "c")
    assert ds.ids == names[::-1][:2] and ds.provenance()["limit"] == 2


def test_guide_order_file():
    names = read_order(M.dir / M.data["order_file"])
    assert len(names) == 500 and len(set(names)) == 500
    cities = [n.split("_")[0] for n in names]
    assert {c: cities.count(c) for c in set(cities)} == {"frankfurt": 267, "lindau": 59, "munster": 174}
    assert cities[0] == "munster" and names != sorted(names)    # not the default sorted order
    assert SAMPLE_NAME in names


def test_read_order_errors(tmp_path):
    (tmp_path / "dup.txt").write_text("a_1_2\nb_1_2_leftImg8bit.png\nval/a/a_1_2_leftImg8bit.png\n")
    with pytest.raises(ZooError, match=r"dup.txt: duplicate ids: lines 1 and 3 \('val/a/a_1_2_leftImg8bit.png' and 'a_1_2' are both a_1_2\)"):
        read_order(tmp_path / "dup.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ZooError, match="empty"):
        read_order(tmp_path / "empty.txt")
    with pytest.raises(ZooError, match="ids file not found"):
        read_order(tmp_path / "none.txt")


def test_order_file_naming_a_missing_image(tmp_path):
    synthetic_tree(tmp_path / "cs", ["bonn_000000_000019"], size=(4, 8))
    (tmp_path / "ids.txt").write_text("bonn_000000_000019\nbonn_000009_000019\n")
    with pytest.raises(ZooError, match=r"ids.txt: 1 of 2 listed samples have no image .*_leftImg8bit.png: bonn_000009_000019$"):
        M.adapter().dataset(tmp_path / "cs", tmp_path / "ids.txt", None, tmp_path / "c")


def test_mixed_image_sizes_are_refused(tmp_path):
    names = ["bonn_000000_000019", "bonn_000001_000019", "bonn_000002_000019"]
    synthetic_tree(tmp_path / "cs", names, size=(8, 16), sizes={names[2]: (8, 20)})
    with pytest.raises(ZooError) as ei:
        M.adapter().dataset(tmp_path / "cs", None, None, tmp_path / "c")
    msg = str(ei.value)
    assert f"{names[2]}_leftImg8bit.png: image is 20x8 but {names[0]}_leftImg8bit.png is 16x8" in msg
    assert "one image size" in msg


def test_builtin_sample_and_export_size_option(tmp_path):
    a = M.adapter()
    ds = a.dataset(None, None, None, tmp_path)
    assert ds.root == BUILTIN.resolve() and ds.ids == [SAMPLE_NAME] and ds.size == (128, 256)
    x, target = ds.preprocess(ds.read(SAMPLE_NAME))
    assert x.shape == (3, 128, 256) and target.shape == (128, 256)
    assert set(np.unique(target)) <= set(range(19)) | {255} and (target < 19).mean() > 0.5
    prov = ds.provenance()
    assert prov["builtin"] is True and prov["expected_samples"] is None and prov["split"] == "builtin sample"
    assert prov["preparation"]["image_size"] == [128, 256]
    assert a.options["export_hw"] == "128x256"                  # the graph is exported at the data's size
    synthetic_tree(tmp_path / "other", ["bonn_000000_000019"], size=(8, 16))
    assert a.dataset(tmp_path / "other", None, None, tmp_path).size == (8, 16) and a.options["export_hw"] == "8x16"
    with pytest.raises(ZooError, match="images are 128x256 .* export_hw=1024x2048"):
        M.adapter(export_hw="1024x2048").dataset(None, None, None, tmp_path)
