"""The numpy postprocess (postprocess.py) and the adapter's (its COCO results rows) against mmdet
3.3.0's own predict on the same input, anchors against mmdet's AnchorGenerator, NMS against mmcv's
compiled batched_nms, and the letterbox geometry against mmcv.imrescale."""
from __future__ import annotations

import mmcv
import numpy as np
import pytest
import torch

from models.nasfpn.postprocess import (NUM_CLASSES, DetectCfg, batched_nms, detect, letterbox_geometry, level_anchors,
                                       to_original, top_k_stable)

from zoo.datasets.coco import CAT_IDS
from zoo.manifest import load_manifest
from zoo.predictions import Detections

from .conftest import structured_images

SIZE = 640


def mmdet_predict(model, x: torch.Tensor):
    """mmdet's full predict (extract_feat -> head -> predict_by_feat, its test_cfg) on a letterboxed
    batch, in input coordinates (img_shape = the 640x640 input, rescale off)."""
    from mmdet.structures import DetDataSample
    meta = {"img_shape": (SIZE, SIZE), "ori_shape": (SIZE, SIZE), "scale_factor": (1.0, 1.0),
            "pad_shape": (SIZE, SIZE), "batch_input_shape": (SIZE, SIZE)}
    with torch.no_grad():
        res = model.det.predict(x, [DetDataSample(metainfo=meta) for _ in range(len(x))], rescale=False)
    return [(r.pred_instances.bboxes.numpy(), r.pred_instances.scores.numpy(), r.pred_instances.labels.numpy())
            for r in res]


@pytest.fixture(scope="module")
def batch():
    return torch.from_numpy(structured_images(2, (SIZE, SIZE), seed=11))


@pytest.fixture(scope="module")
def raw(model, batch):
    with torch.no_grad():
        return model(batch).numpy()


@pytest.fixture(scope="module")
def reference(model, batch):
    return mmdet_predict(model, batch)


def test_anchors_equal_mmdet_anchor_generator(model):
    gen = model.det.bbox_head.prior_generator
    feats = [(SIZE + s - 1) // s for s in (8, 16, 32, 64, 128)]
    theirs = torch.cat(gen.grid_priors([(f, f) for f in feats], device="cpu")).numpy()
    sizes, ours = level_anchors(SIZE, SIZE)
    assert sizes == tuple(f * f * 9 for f in feats) and sum(sizes) == 76725
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


def test_detections_equal_mmdet_predict(raw, reference):
    assert raw.shape == (2, 76725, NUM_CLASSES + 4)
    for out, (rb, rs, rl) in zip(raw, reference):
        boxes, scores, labels = detect(out, (SIZE, SIZE))
        assert 20 <= len(rs) <= 100, "the calibrated weights must give detections to compare"
        assert len(scores) == len(rs)
        np.testing.assert_array_equal(labels, rl)
        np.testing.assert_allclose(scores, rs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(boxes, rb, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("w,h", [(640, 480), (427, 640), (1024, 683)])
def test_adapter_postprocess_equals_mmdet_predict_mapped_back(raw, reference, w, h):
    """The adapter's prediction of one output: mmdet's detections (input coordinates) mapped to a
    w x h original by the guide's formula, those below score_thr dropped, labels as COCO category
    ids, as COCO results rows ([x, y, w, h] to 3 decimals, scores to 5), best first."""
    adapter = load_manifest("nasfpn").adapter()
    for k, (out, (rb, rs, rl)) in enumerate(zip(raw, reference)):
        det = adapter.postprocess(out, {"image_id": 7 + k, "width": w, "height": h})
        assert isinstance(det, Detections) and det.image_id == 7 + k
        boxes = to_original(rb, w, h, SIZE)
        keep = rs >= 0.05
        assert len(det.rows) == keep.sum() >= 20
        assert [r["category_id"] for r in det.rows] == [CAT_IDS[int(lab)] for lab in rl[keep]]
        assert all(r["image_id"] == 7 + k for r in det.rows)
        np.testing.assert_allclose([r["score"] for r in det.rows], rs[keep], rtol=0, atol=1e-5)
        xywh = np.concatenate([boxes[keep][:, :2], boxes[keep][:, 2:] - boxes[keep][:, :2]], 1)
        np.testing.assert_allclose([r["bbox"] for r in det.rows], xywh, rtol=1e-5, atol=2e-3)
        assert all(r["bbox"] == [round(v, 3) for v in r["bbox"]] and r["score"] == round(r["score"], 5)
                   for r in det.rows)


def test_batched_nms_equals_mmcv_compiled_op():
    from mmcv.ops import batched_nms as mmcv_batched_nms
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, (800, 2)).astype(np.float32)
    wh = rng.uniform(5, 120, (800, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.random(800).astype(np.float32)
    labels = rng.integers(0, 5, 800)
    _, keep = mmcv_batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels),
                               {"type": "nms", "iou_threshold": 0.5})
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, 0.5), keep.numpy())
    # stopping after k kept boxes (max_per_img) gives exactly the first k of the full run
    for k in (1, 10, 57, len(keep), len(keep) + 5):
        np.testing.assert_array_equal(batched_nms(boxes, scores, labels, 0.5, max_keep=k), keep.numpy()[:k])


def test_thresholds_and_limits():
    raw = np.zeros((76725, 84), np.float32)
    raw[:, :NUM_CLASSES] = 0.01
    assert len(detect(raw, (SIZE, SIZE))[0]) == 0  # nothing above 0.05
    rng = np.random.default_rng(1)
    raw[:, :NUM_CLASSES] = rng.random((76725, NUM_CLASSES), dtype=np.float32)
    raw[:, NUM_CLASSES:] = rng.normal(0, 0.2, (76725, 4)).astype(np.float32)
    boxes, scores, labels = detect(raw, (SIZE, SIZE), DetectCfg(max_per_img=37))
    assert len(scores) == 37 and np.all(np.diff(scores) <= 0)
    assert boxes.min() >= 0 and boxes.max() <= SIZE
    with pytest.raises(ValueError, match="expected a \\[76725, 84\\] output"):
        detect(raw[:100], (SIZE, SIZE))


@pytest.mark.parametrize("w,h", [(640, 427), (427, 640), (640, 294), (586, 640), (500, 375), (1024, 768)])
def test_letterbox_size_equals_mmcv_imrescale_and_maps_back(w, h):
    img = np.zeros((h, w, 3), np.uint8)
    got = mmcv.imrescale(img, (SIZE, SIZE))
    g = letterbox_geometry(w, h, SIZE)
    assert (g["new_w"], g["new_h"]) == (got.shape[1], got.shape[0])
    # a box of the original image -> letterbox coordinates -> back (the guide's float pads)
    box = np.array([[10.0, 20.0, w - 30.0, h - 5.0]])
    f = min(SIZE / w, SIZE / h)
    pads = np.array([(SIZE - w * f) // 2, (SIZE - h * f) // 2] * 2)
    np.testing.assert_allclose(to_original(box * f + pads, w, h, SIZE), box, atol=1e-6)
    assert to_original(np.array([[-50.0, -50.0, 5000.0, 5000.0]]), w, h, SIZE).tolist() == [[0, 0, w, h]]


def test_top_k_stable_equals_a_stable_full_sort():
    rng = np.random.default_rng(4)
    for n, k in ((5000, 1000), (1000, 1000), (10, 1000), (20000, 7), (3000, 1)):
        vals = rng.integers(0, 50, n).astype(np.float32) / 50   # many ties, also at the cut
        np.testing.assert_array_equal(top_k_stable(vals, k), np.argsort(-vals, kind="stable")[:k])
        vals = rng.random(n, dtype=np.float32)
        np.testing.assert_array_equal(top_k_stable(vals, k), np.argsort(-vals, kind="stable")[:k])
