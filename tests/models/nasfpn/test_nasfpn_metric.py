"""COCO evaluation: zoo.metrics.coco.CocoBoxAP against a direct pycocotools run on constructed
detections, the whole mapping (letterbox -> postprocess coordinates -> original image -> COCO
results rows) recovering the real annotations of the built-in images, and saved detections
re-scoring to identical figures."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from models.nasfpn.postprocess import NUM_CLASSES
from zoo.datasets import open_source
from zoo.datasets.coco import CAT_IDS, load_coco
from zoo.errors import ZooError
from zoo.manifest import load_manifest
from zoo.metrics.coco import STAT_NAMES, CocoBoxAP
from zoo.predictions import Detections, PredictionWriter, read_predictions

SIZE = 640
MANIFEST = load_manifest("nasfpn")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return open_source(MANIFEST, None, None, None, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def coco(source):
    return source.coco


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


def ground_truth_detections(source, score=0.9):
    """Per sample (in id order): the adapter's prediction of a graph output that decodes to the
    image's own non-crowd boxes, mapped into the letterbox as the guide's preprocess places them."""
    adapter = MANIFEST.adapter()
    coco = source.coco
    out = []
    for sid in source.ids:
        sample = source.read(sid)
        _, meta = adapter.preprocess(sample)
        w, h = sample.info["width"], sample.info["height"]
        f = min(SIZE / w, SIZE / h)
        pads = np.array([(SIZE - w * f) // 2, (SIZE - h * f) // 2] * 2)
        anns = [a for a in sample.label if not a["iscrowd"]]
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns]) * f + pads
        labels = [CAT_IDS.index(a["category_id"]) for a in anns]
        assert anns == [a for a in coco.imgToAnns[int(sid)] if not a["iscrowd"]]
        out.append((adapter.postprocess(raw_output_for(boxes, labels, [score] * len(anns)), meta),
                    adapter.target(sample)))
    return out


def test_ground_truth_through_the_whole_mapping_scores_ap_1(source, coco):
    (m,) = MANIFEST.adapter().metrics(source)
    for det, target in ground_truth_detections(source):
        assert isinstance(det, Detections) and det.image_id == target
        assert all(r["image_id"] == target and r["score"] == 0.9 for r in det.rows)
        m.update(det, target)
    f = m.compute()
    assert f["num_samples"] == 5 and f["num_detections"] == sum(
        1 for a in coco.dataset["annotations"] if not a["iscrowd"])
    assert f["map"] == pytest.approx(1.0, abs=1e-9) and f["map_50"] == pytest.approx(1.0)
    assert set(STAT_NAMES) <= set(f)
    present = {c["class"] for c in m.per_class() if c["ap"] is not None}
    assert present and all(c["ap"] == pytest.approx(1.0) for c in m.per_class() if c["ap"] is not None)


def noisy_detections(coco, seed=3):
    rng = np.random.default_rng(seed)
    by_image = {i: [] for i in coco.getImgIds()}
    for a in coco.dataset["annotations"]:
        x, y, w, h = a["bbox"]
        for _ in range(2):
            jit = rng.normal(0, 0.08, 4) * [w, h, w, h]
            cat = a["category_id"] if rng.random() < 0.8 else int(rng.choice(CAT_IDS))
            by_image[a["image_id"]].append(
                {"image_id": a["image_id"], "category_id": cat, "score": float(rng.random()),
                 "bbox": [float(x + jit[0]), float(y + jit[1]), float(max(w + jit[2], 1)), float(max(h + jit[3], 1))]})
    return [Detections(i, rows) for i, rows in by_image.items()]


def test_equals_direct_pycocotools_on_noisy_predictions(coco, tmp_path):
    dets = noisy_detections(coco)
    results = [r for d in dets for r in d.rows]
    m = CocoBoxAP("guide", "", coco, results_json=str(tmp_path / "dets.json"))
    for d in dets:
        m.update(d, d.image_id)
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
    assert json.loads((tmp_path / "dets.json").read_text()) == results  # exactly the rows it scored


def test_saved_detections_rescore_to_identical_figures(source, tmp_path):
    """What `invoke score` does: the saved detections.json, the targets from read_label (no image
    decoded), a fresh metric: the same figures to the last bit."""
    adapter = MANIFEST.adapter()
    live = adapter.metrics(source)[0]
    writer = PredictionWriter(tmp_path / "pred")
    for det, target in ground_truth_detections(source, score=0.7):
        jittered = Detections(det.image_id, [{**r, "bbox": [round(v * 1.013, 3) for v in r["bbox"]]} for r in det.rows])
        live.update(jittered, target)
        writer.add(str(target), jittered)
    writer.close()
    ids, items = read_predictions(tmp_path / "pred")
    assert ids == source.ids
    rescored = adapter.metrics(source)[0]
    for sid, det in items:
        rescored.update(det, adapter.target(source.read_label(sid)))
    assert rescored.compute() == live.compute() and rescored.per_class() == live.per_class()
    assert 0 < live.compute()["map"] < 1


def test_drawings_and_image_id_check(source, tmp_path):
    adapter = MANIFEST.adapter(visualize=str(tmp_path / "vis"))
    (m,) = adapter.metrics(source)
    det, target = ground_truth_detections(source)[0]
    with pytest.raises(ValueError, match=f"detections of image {target} given for image 1"):
        m.update(det, 1)
    m.update(det, target)
    assert [p.name for p in (tmp_path / "vis").iterdir()] == [f"{target:012d}.jpg"]


def test_annotation_file_checks(tmp_path):
    with pytest.raises(ZooError, match="annotation file not found"):
        load_coco(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ZooError, match=r"bad\.json: not a COCO instances file"):
        load_coco(tmp_path / "bad.json")


def test_no_detections_at_all_scores_zero_with_no_class_ap(source, coco):
    """A model that detects nothing (e.g. a broken int8 graph) is a score of 0, not a crash."""
    metric = CocoBoxAP("box", "COCO box AP", coco)
    for sid in source.ids:
        image_id = source.read_label(sid).info["image_id"]
        metric.update(Detections(image_id, []), image_id)
    figures = metric.compute()
    assert figures["map"] == 0.0 and figures["num_detections"] == 0 and figures["num_samples"] == len(source.ids)
    assert metric.per_class() == []
