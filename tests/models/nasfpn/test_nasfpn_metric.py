"""COCO evaluation: the zoo's CocoBoxAP against a direct pycocotools run on constructed
predictions, and the whole mapping (letterbox -> postprocess coordinates -> original image ->
COCO results) recovering the real annotations of the built-in images."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from models.nasfpn.adapter import CocoBoxAP
from models.nasfpn.postprocess import NUM_CLASSES, DetectCfg, letterbox_geometry
from zoo.coco import CAT_IDS, STAT_NAMES, load_coco
from zoo.errors import ZooError

from .conftest import BUILTIN

SIZE = 640


@pytest.fixture(scope="module")
def coco():
    return load_coco(BUILTIN / "annotations" / "instances_val2017.json")


def raw_output_for(boxes_in_input, labels, scores):
    """A graph output [76725, 84] whose decoded detections are exactly the given boxes: for each box
    an anchor row with the class score set and the deltas that turn that anchor into the box."""
    from models.nasfpn.postprocess import level_anchors
    _, anchors = level_anchors(SIZE, SIZE)
    raw = np.zeros((anchors.shape[0], NUM_CLASSES + 4), np.float32)
    raw[:, :NUM_CLASSES] = 0.001
    cx, cy = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    used = set()
    for (x1, y1, x2, y2), lab, s in zip(boxes_in_input, labels, scores):
        bx, by, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        cost = np.abs(np.log(aw / bw)) + np.abs(np.log(ah / bh)) + (np.abs(cx - bx) + np.abs(cy - by)) / aw
        order = np.argsort(cost)
        i = next(int(j) for j in order if int(j) not in used)
        used.add(i)
        raw[i, lab] = s
        raw[i, NUM_CLASSES:] = [(bx - cx[i]) / aw[i], (by - cy[i]) / ah[i], np.log(bw / aw[i]), np.log(bh / ah[i])]
    return raw


def test_ground_truth_through_the_whole_mapping_scores_ap_1(coco):
    m = CocoBoxAP("guide", "", coco, SIZE, DetectCfg())
    outs, targets = [], []
    for iid in coco.getImgIds():
        info = coco.imgs[iid]
        w, h = info["width"], info["height"]
        f = min(SIZE / w, SIZE / h)
        pads = np.array([(SIZE - w * f) // 2, (SIZE - h * f) // 2] * 2)
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[iid])) if not a["iscrowd"]]
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns]) * f + pads
        labels = [CAT_IDS.index(a["category_id"]) for a in anns]
        outs.append(raw_output_for(boxes, labels, [0.9] * len(anns)))
        targets.append({"image_id": iid, "width": w, "height": h, "geometry": letterbox_geometry(w, h, SIZE)})
    m.update(np.stack(outs), targets)
    f = m.compute()
    assert f["num_samples"] == 5 and f["num_detections"] == sum(
        1 for a in coco.dataset["annotations"] if not a["iscrowd"])
    assert f["map"] == pytest.approx(1.0, abs=1e-9) and f["map_50"] == pytest.approx(1.0)
    assert set(STAT_NAMES) <= set(f)
    present = {c["class"] for c in m.per_class() if c["ap"] is not None}
    assert present and all(c["ap"] == pytest.approx(1.0) for c in m.per_class() if c["ap"] is not None)


def test_equals_direct_pycocotools_on_noisy_predictions(coco):
    rng = np.random.default_rng(3)
    results = []
    for a in coco.dataset["annotations"]:
        x, y, w, h = a["bbox"]
        for _ in range(2):
            jit = rng.normal(0, 0.08, 4) * [w, h, w, h]
            cat = a["category_id"] if rng.random() < 0.8 else int(rng.choice(CAT_IDS))
            results.append({"image_id": a["image_id"], "category_id": cat,
                            "bbox": [float(x + jit[0]), float(y + jit[1]), float(max(w + jit[2], 1)), float(max(h + jit[3], 1))],
                            "score": float(rng.random())})
    m = CocoBoxAP("guide", "", coco, SIZE, DetectCfg())
    m.results, m.image_ids = results, coco.getImgIds()
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.params.maxDets = [100, 300, 1000]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    got = m.compute()
    for name, value in zip(STAT_NAMES, ev.stats):
        assert got[name] == pytest.approx(float(value), abs=1e-12), name
    assert 0.05 < got["map"] < 0.95


def test_annotation_file_checks(tmp_path):
    with pytest.raises(ZooError, match="annotation file not found"):
        load_coco(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ZooError, match=r"bad\.json: not a COCO instances file"):
        load_coco(tmp_path / "bad.json")
