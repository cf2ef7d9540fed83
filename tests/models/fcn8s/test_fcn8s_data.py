"""The VOC source (zoo.datasets.voc) on the built-in sample and synthetic VOCdevkit trees, and the
adapter's preprocess/postprocess on its samples: one prediction {"labels": uint8 HxW at the
original size} for both protocols and for the guide's in-graph argmax."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.fcn8s.adapter import guide_input, guide_restore, upstream_input, upstream_prediction
from zoo.datasets import Opened, open_source
from zoo.datasets.voc import VOCSegmentation, read_label
from zoo.errors import ZooError
from zoo.manifest import load_manifest

from .conftest import BUILTIN, copy_builtin, write_voc

MANIFEST = load_manifest("fcn8s")
BUILTIN_IDS = ["2007_000032", "2007_000033", "2007_000063"]


def voc(data=None, ids_file=None, limit=None, tmp_path=None):
    return open_source(MANIFEST, data, ids_file, limit, tmp_path)


def test_builtin_sample(tmp_path):
    src = voc(tmp_path=tmp_path)
    assert isinstance(src, VOCSegmentation) and src.ids == BUILTIN_IDS
    p = src.provenance()
    assert p["name"] == "voc" and p["builtin"] is True and p["ids_file"].endswith("builtin_ids.txt")
    s = src.read("2007_000033")
    jpeg = BUILTIN / "VOC2012" / "JPEGImages" / "2007_000033.jpg"
    np.testing.assert_array_equal(s.image, cv2.imread(str(jpeg), cv2.IMREAD_COLOR))  # BGR, as cv2 reads
    np.testing.assert_array_equal(s.label, read_label(BUILTIN / "VOC2012" / "SegmentationClass" / "2007_000033.png"))
    assert s.image.shape[:2] == s.label.shape == (366, 500) and s.info["image"] == str(jpeg)


def test_split_listing_and_root_spellings(tmp_path):
    """No ids file: the split's ImageSets/Segmentation/<name>.txt (val: 1 of the 3 built-in ids),
    named in the preparation (no user ids file: the split's expected size is kept); the root may be
    VOCdevkit or VOC2012."""
    for root in (BUILTIN, BUILTIN / "VOC2012"):
        src = voc(root, tmp_path=tmp_path)
        assert src.ids == ["2007_000033"] and src.expected == 1449 and not src.complete
        p = src.provenance()
        assert p["ids_file"] is None and p["preparation"]["ids_from"].endswith("ImageSets/Segmentation/val.txt")


def test_declared_split_name_is_the_listing(tmp_path):
    tree = write_voc(tmp_path / "VOCdevkit", ["a1", "a2", "a3"], sizes={k: (60, 80) for k in ("a1", "a2", "a3")},
                     split_ids=["a3", "a1"])
    (tree / "VOC2012/ImageSets/Segmentation/train.txt").write_text("a2\n")
    assert voc(tree, tmp_path=tmp_path).ids == ["a3", "a1"]  # val.txt, its order kept
    opened = Opened(root=tree, split="training", ids_file=None, builtin=False, limit=None, expected=None)
    assert VOCSegmentation.open(opened, {"name": "train"}, {}, tmp_path).ids == ["a2"]
    with pytest.raises(ZooError, match="the split has no name"):
        VOCSegmentation.open(opened, {}, {}, tmp_path)


def test_limit_cuts_before_the_files_are_checked(tmp_path):
    tree = copy_builtin(tmp_path / "VOCdevkit")
    ids = tmp_path / "ids.txt"
    ids.write_text("2007_000033\n2009_999999\n")
    assert voc(tree, ids, limit=1, tmp_path=tmp_path).ids == ["2007_000033"]
    with pytest.raises(ZooError, match=r"2009_999999\.jpg: listed in .*ids\.txt but missing"):
        voc(tree, ids, tmp_path=tmp_path)


def test_read_label_does_not_decode_the_image(tmp_path):
    tree = copy_builtin(tmp_path / "VOCdevkit")
    jpeg = tree / "VOC2012/JPEGImages/2007_000033.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    src = voc(tree, tmp_path=tmp_path)
    s = src.read_label("2007_000033")
    assert s.image is None and s.label.shape == (366, 500)
    with pytest.raises(ZooError, match="unreadable or truncated"):
        src.read("2007_000033")


def test_label_of_another_size_is_refused(tmp_path):
    tree = write_voc(tmp_path / "VOCdevkit", ["x"], sizes={"x": (60, 80)})
    lab = tree / "VOC2012/SegmentationClass/x.png"
    from PIL import Image
    Image.open(lab).crop((0, 0, 70, 60)).save(lab)
    with pytest.raises(ZooError, match=r"x\.png: label is 70x60, its image is 80x60"):
        voc(tree, tmp_path=tmp_path).read("x")


# ------------------------------------------------------------------ the adapter on the source's samples

@pytest.fixture(scope="module")
def sample():
    return open_source(MANIFEST, None, None, None, BUILTIN).read("2007_000033")  # 500x366


def test_guide_preprocess_and_postprocess(sample):
    a = MANIFEST.adapter()
    x, meta = a.preprocess(sample)
    ref, geo = guide_input(sample.image, 500)
    np.testing.assert_array_equal(x, ref)
    logits = np.random.default_rng(0).normal(size=(21, 500, 500)).astype(np.float32)
    pred = a.postprocess(logits, meta)
    assert set(pred) == {"labels"} and pred["labels"].dtype == np.uint8 and pred["labels"].shape == (366, 500)
    np.testing.assert_array_equal(pred["labels"], guide_restore(logits.argmax(0), geo, 366, 500))
    np.testing.assert_array_equal(a.target(sample), sample.label)
    # the guide's graph with the argmax inside (int64 [1, 500, 500]) gives the same prediction
    b = MANIFEST.adapter(argmax_in_graph=True)
    x2, meta2 = b.preprocess(sample)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(b.postprocess(logits.argmax(0)[None].astype(np.int64), meta2)["labels"],
                                  pred["labels"])


def test_upstream_preprocess_and_postprocess(sample):
    a = MANIFEST.adapter(protocol="upstream")
    x, meta = a.preprocess(sample)
    np.testing.assert_array_equal(x, upstream_input(sample.image, (2048, 512)))
    assert x.shape == (3, 512, 699)  # short side 512, each image at its own size
    logits = np.random.default_rng(1).normal(size=(21, 512, 699)).astype(np.float32)
    pred = a.postprocess(logits, meta)
    assert pred["labels"].dtype == np.uint8 and pred["labels"].shape == (366, 500)
    np.testing.assert_array_equal(pred["labels"], upstream_prediction(logits, 366, 500))


def test_adapter_is_stateless():
    a = MANIFEST.adapter()
    with pytest.raises(TypeError):
        a.options["protocol"] = "upstream"
    assert not hasattr(a, "dataset") and not hasattr(a, "decision")
