"""The COCO source (zoo.datasets.coco) on the built-in sample: the annotation file's order, ids
files of ids or file names, the limit cutting before files are checked, labels without decoding
the image, shards that cover every id once."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from zoo.datasets import Opened, open_source
from zoo.datasets.coco import CocoDetection
from zoo.errors import ZooError
from zoo.manifest import load_manifest

from .conftest import BUILTIN, copy_builtin

MANIFEST = load_manifest("nasfpn")
ORDER = ["128372", "404249", "343934", "194216", "464689"]  # instances_val2017.json's image order


def coco(tmp_path, data=None, ids_file=None, limit=None):
    return open_source(MANIFEST, data, ids_file, limit, tmp_path / "cache")


def test_builtin_sample(tmp_path):
    src = coco(tmp_path)
    assert isinstance(src, CocoDetection) and src.ids == ORDER and src.expected is None
    p = src.provenance()
    assert p["name"] == "coco" and p["builtin"] is True and p["ids_file"] is None
    assert p["preparation"]["annotations"] == str(BUILTIN / "annotations" / "instances_val2017.json")
    s = src.read("343934")
    path = BUILTIN / "val2017" / "000000343934.jpg"
    np.testing.assert_array_equal(s.image, cv2.imread(str(path), cv2.IMREAD_COLOR))  # BGR, as cv2 reads
    assert s.info == {"image_id": 343934, "width": s.image.shape[1], "height": s.image.shape[0], "file": str(path)}
    assert s.label == src.coco.imgToAnns[343934] and s.label


def test_split_name_gives_the_folder_and_the_annotation_file(tmp_path):
    root = copy_builtin(tmp_path / "coco")
    (root / "val2017").rename(root / "minival")
    (root / "annotations" / "instances_val2017.json").rename(root / "annotations" / "instances_minival.json")
    opened = Opened(root=root, split="evaluation", ids_file=None, builtin=False, limit=None, expected=None)
    assert CocoDetection.open(opened, {"name": "minival"}, {}, tmp_path).ids == ORDER
    with pytest.raises(ZooError, match="instances_val2017.json: annotation file not found"):
        CocoDetection.open(opened, {"name": "val2017"}, {}, tmp_path)
    with pytest.raises(ZooError, match="the COCO split has no name"):
        CocoDetection.open(opened, {}, {}, tmp_path)


def test_full_split_expected_size_and_ids_files(tmp_path):
    root = copy_builtin(tmp_path / "coco")
    src = coco(tmp_path, root)
    assert src.ids == ORDER and src.expected == 5000 and not src.complete
    ids = tmp_path / "ids.txt"
    ids.write_text("000000464689.jpg\n128372\n")  # file names or ids, the file's order
    src = coco(tmp_path, root, ids)
    assert src.ids == ["464689", "128372"] and src.expected is None


def test_limit_cuts_before_the_files_are_checked(tmp_path):
    root = copy_builtin(tmp_path / "coco")
    (root / "val2017" / "000000343934.jpg").unlink()  # the third in the annotation file's order
    assert coco(tmp_path, root, limit=2).ids == ORDER[:2]
    with pytest.raises(ZooError, match=r"000000343934\.jpg: image 343934 of .* is missing"):
        coco(tmp_path, root)


def test_read_label_does_not_decode_the_image(tmp_path):
    root = copy_builtin(tmp_path / "coco")
    img = root / "val2017" / "000000194216.jpg"
    img.write_bytes(img.read_bytes()[:300])
    src = coco(tmp_path, root)
    s = src.read_label("194216")
    assert s.image is None and s.info["image_id"] == 194216 and s.label == src.coco.imgToAnns[194216]
    with pytest.raises(ZooError, match="unreadable or truncated"):
        src.read("194216")


def test_image_of_another_size_than_annotated(tmp_path):
    root = copy_builtin(tmp_path / "coco")
    img = root / "val2017" / "000000128372.jpg"
    cv2.imwrite(str(img), cv2.imread(str(img))[:100])
    with pytest.raises(ZooError, match=r"000000128372\.jpg: image is 640x100, the annotation file says 640x427"):
        coco(tmp_path, root).read("128372")


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7])
def test_shards_cover_every_id_once(tmp_path, count):
    src = coco(tmp_path)
    shards = [src.shard(i, count) for i in range(count)]
    assert [i for s in shards for i in s.ids] == src.ids  # every id once, in the source's order
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    for i, s in enumerate(shards):
        assert s.coco is src.coco and s.provenance()["shard"] == {"index": i, "count": count}
        for sid in s.ids:
            assert s.read_label(sid).info["image_id"] == int(sid)
