"""zoo.predictions: what a run keeps with --save-predictions and reads back for `score`, on real
files: maps as lossless PNGs (bool masks, uint8 and uint16 label maps), detections as COCO results
rows; a new folder per run, never written over; a damaged folder is a one-line error naming the file."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.predictions import Detections, PredictionWriter, read_predictions

RNG = np.random.default_rng(0)


def _maps(i: int) -> dict:
    return {"mask": RNG.random((5, 7)) > 0.5,                                       # bool
            "labels": RNG.integers(0, 19, (5, 7)).astype(np.int64),                 # < 256 classes
            "ignore": np.where(RNG.random((5, 7)) > 0.8, 255, i).astype(np.uint8),  # 255 kept as is
            "instances": RNG.integers(256, 65535, (5, 7)).astype(np.int32)}       # > 255: uint16 PNG


def _read_all(folder):
    ids, items = read_predictions(folder)
    return ids, list(items)


def test_maps_round_trip_exactly(tmp_path):
    folder = tmp_path / "p"
    preds = {f"id{i}": _maps(i) for i in range(3)}
    preds["id2"]["instances"][0, 0] = 65535                                         # the largest value kept
    w = PredictionWriter(folder)
    for sid, p in preds.items():
        w.add(sid, p)
    block = w.close()
    from zoo.predictions import check_digest, folder_digest
    assert block == {"path": str(folder), "num_samples": 3, "maps": ["ignore", "instances", "labels", "mask"],
                     "detections": False, **folder_digest(folder)}
    assert block["files"] == 1 + 4 * 3  # index.json and a PNG per key and sample, each in the digest
    check_digest(folder, block)
    # one lossless PNG per key and sample, of the smallest integer type that holds the values
    png = cv2.imread(str(folder / "mask" / "id0.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint8 and set(np.unique(png)) <= {0, 255}
    assert cv2.imread(str(folder / "labels" / "id0.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    assert cv2.imread(str(folder / "instances" / "id0.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    index = json.loads((folder / "index.json").read_text())
    assert index["ids"] == ["id0", "id1", "id2"] and index["detections"] is None
    assert index["maps"] == {"mask": "bool", "labels": "int", "ignore": "int", "instances": "int"}

    ids, items = _read_all(folder)
    assert ids == list(preds) and [sid for sid, _ in items] == ids
    for sid, got in items:
        want = preds[sid]
        assert set(got) == set(want)
        assert got["mask"].dtype == bool
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{sid}/{key}")


def test_detections_round_trip(tmp_path):
    a = Detections.from_boxes(397133, [[10.5, 20.25, 30.0, 60.125], [0, 0, 1, 1]], [0.9, 0.123456789], [1, 90])
    assert a.rows[0] == {"image_id": 397133, "category_id": 1, "bbox": [10.5, 20.25, 19.5, 39.875], "score": 0.9}
    empty = Detections.from_boxes(128372, np.zeros((0, 4)), [], [])
    c = Detections.from_boxes(5, [[1, 2, 3, 4]], [0.5], [3])
    w = PredictionWriter(tmp_path / "p")
    for d in (a, empty, c):
        w.add(str(d.image_id), d)
    block = w.close()
    assert block == {"path": str(tmp_path / "p"), "num_samples": 3, "maps": [], "detections": True,
                     "sha256": block["sha256"], "files": 2}  # index.json, detections.json
    # one byte of the detections changed: not the files the record's digest vouches for
    det = tmp_path / "p" / "detections.json"
    det.write_text(det.read_text().replace("0.9", "0.8", 1))
    from zoo.errors import ZooError
    from zoo.predictions import check_digest
    with pytest.raises(ZooError, match=r"not the ones the record vouches for \(2 file\(s\) now, 2 recorded"):
        check_digest(tmp_path / "p", block)
    det.write_text(det.read_text().replace("0.8", "0.9", 1))
    rows = json.loads((tmp_path / "p" / "detections.json").read_text())
    assert rows == a.rows + c.rows                      # the COCO results file AP is computed from
    ids, items = _read_all(tmp_path / "p")
    assert ids == ["397133", "128372", "5"]
    assert [d for _, d in items] == [a, Detections(128372, []), c]  # floats exactly, empty images kept


def test_an_existing_folder_is_never_written_over(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(ZooError, match="already exists") as exc:
        PredictionWriter(folder)
    assert str(exc.value).startswith(str(folder)) and "\n" not in str(exc.value)
    assert (folder / "keep.txt").read_text() == "mine"
    PredictionWriter(tmp_path / "new" / "deeper")       # parents are created
    with pytest.raises(ZooError, match="already exists"):
        PredictionWriter(tmp_path / "new" / "deeper")


def test_restart_forgets_what_was_added(tmp_path):
    w = PredictionWriter(tmp_path / "p")
    w.add("a", {"mask": np.ones((2, 2), bool), "old": np.zeros((2, 2), np.uint8)})
    w.add("b", {"mask": np.zeros((2, 2), bool), "old": np.zeros((2, 2), np.uint8)})
    w.restart()                                         # a batch size whose pipeline failed part way
    assert list((tmp_path / "p").iterdir()) == []
    w.add("a", {"mask": np.eye(2, dtype=bool)})
    assert w.close()["maps"] == ["mask"]
    ids, items = _read_all(tmp_path / "p")
    assert ids == ["a"] and set(items[0][1]) == {"mask"}
    np.testing.assert_array_equal(items[0][1]["mask"], np.eye(2, dtype=bool))
    assert not (tmp_path / "p" / "old").exists()
    w.discard()
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("value,needle", [
    (np.zeros((2, 2, 3), np.uint8), "a saved map must be 2-D, got shape (2, 2, 3)"),
    (np.zeros((2, 2), np.float32), "must hold integers 0..65535, got float32"),
    (np.full((2, 2), -1, np.int16), "must hold integers 0..65535, got int16 values -1..-1"),
    (np.array([[0, 65536]], np.int32), "must hold integers 0..65535, got int32 values 0..65536"),
])
def test_maps_that_cannot_be_kept_exactly_are_refused(tmp_path, value, needle):
    w = PredictionWriter(tmp_path / "p")
    w.add("a", {"mask": np.ones((2, 2), bool), "labels": np.ones((2, 2), np.uint8)})
    with pytest.raises(ZooError) as exc:
        w.add("b", {"mask": np.ones((2, 2), bool), "labels": value})
    assert str(exc.value).startswith("prediction 'labels': ") and needle in str(exc.value)
    assert w.ids == ["a"] and not (tmp_path / "p" / "mask" / "b.png").exists()  # nothing of b was kept


def test_a_key_keeps_its_kind(tmp_path):
    """A key's maps are read back one way (a bool mask from 0/255): a key that is a mask in one
    sample and a label map in another would come back wrong, so it is refused."""
    w = PredictionWriter(tmp_path / "p")
    w.add("a", {"m": np.ones((2, 2), bool)})
    with pytest.raises(ZooError, match="prediction 'm' of b: its map is int, the earlier samples' were bool"):
        w.add("b", {"m": np.ones((2, 2), np.uint8)})
    assert w.ids == ["a"]


def test_a_missing_png_is_one_line_naming_the_file(tmp_path):
    w = PredictionWriter(tmp_path / "p")
    for sid in ("a", "b"):
        w.add(sid, {"mask": np.ones((3, 3), bool), "labels": np.ones((3, 3), np.uint8)})
    w.close()
    gone = tmp_path / "p" / "labels" / "b.png"
    gone.unlink()
    ids, items = read_predictions(tmp_path / "p")
    assert ids == ["a", "b"]
    assert next(items)[0] == "a"                        # the files are read lazily, in id order
    with pytest.raises(ZooError) as exc:
        next(items)
    assert str(exc.value) == f"{gone}: missing or unreadable saved prediction"
    gone.write_bytes(b"not a png")                      # unreadable is said the same way
    with pytest.raises(ZooError, match=f"{gone}: missing or unreadable"):
        _read_all(tmp_path / "p")


def test_damaged_or_absent_index_and_detections(tmp_path):
    with pytest.raises(ZooError, match=f"{tmp_path / 'index.json'}: no saved predictions here"):
        read_predictions(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ZooError, match="unreadable predictions index"):
        read_predictions(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format_version": 99, "ids": [], "maps": {}, "detections": None}))
    with pytest.raises(ZooError, match="predictions format 99, this zoo reads 1"):
        read_predictions(tmp_path)
    w = PredictionWriter(tmp_path / "d")
    w.add("7", Detections.from_boxes(7, [[0, 0, 1, 1]], [0.5], [1]))
    w.close()
    (tmp_path / "d" / "detections.json").write_text("[{")
    with pytest.raises(ZooError) as exc:
        read_predictions(tmp_path / "d")
    assert str(exc.value).startswith(f"{tmp_path / 'd' / 'detections.json'}: unreadable detections")
    assert "\n" not in str(exc.value)
