"""zoo.metrics.segmentation.DatasetIoU against mmseg 1.2.2's own IoUMetric on the same predictions
(the adapter's {"labels": uint8 map} as it feeds them)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from mmseg.evaluation import IoUMetric

from models.fcn8s.adapter import CLASSES
from zoo.metrics.segmentation import DatasetIoU


def constructed(n=6, seed=0):
    """Label maps with classes 0..20 and 255 borders, predictions that are right most of the time,
    some classes never present, some only predicted."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        gt = rng.choice([0, 0, 0, 1, 5, 9, 15, 255], size=(h, w)).astype(np.uint8)
        pred = gt.astype(np.int64).copy()
        flip = rng.random((h, w)) < 0.3
        pred[flip] = rng.choice([0, 1, 5, 9, 15, 20], size=int(flip.sum()))
        pred[pred == 255] = rng.integers(0, 21)
        pairs.append((pred, gt))
    return pairs


def ours(pairs):
    m = DatasetIoU("t", "", CLASSES)
    for pred, gt in pairs:
        m.update({"labels": pred.astype(np.uint8)}, gt)
    return m


def theirs(pairs):
    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": CLASSES}
    for pred, gt in pairs:
        metric.process([{}], [{"pred_sem_seg": {"data": torch.from_numpy(pred)[None]},
                               "gt_sem_seg": {"data": torch.from_numpy(gt.astype(np.int64))[None]}}])
    return metric


def test_areas_and_unrounded_figures_equal_mmseg():
    pairs = constructed()
    m, ref = ours(pairs), theirs(pairs)
    totals = [sum(r[i] for r in ref.results) for i in range(4)]  # intersect, union, pred, label
    a = m.areas()
    for got, want in zip((a["intersect"], a["union"], a["pred_label"], a["label"]), totals):
        np.testing.assert_array_equal(got, want.numpy())
    mm = IoUMetric.total_area_to_metrics(*totals, metrics=["mIoU"])
    iou, acc = np.asarray(mm["IoU"], dtype=np.float64), np.asarray(mm["Acc"], dtype=np.float64)
    np.testing.assert_allclose([c["iou"] if c["iou"] is not None else np.nan for c in m.per_class()], iou, equal_nan=True)
    np.testing.assert_allclose([c["acc"] if c["acc"] is not None else np.nan for c in m.per_class()], acc, equal_nan=True)
    figures = m.compute()
    assert figures["miou"] == pytest.approx(np.nanmean(iou), rel=1e-6)  # mmseg sums in float32
    assert figures["macc"] == pytest.approx(np.nanmean(acc), rel=1e-6)  # mmseg sums in float32
    assert figures["aacc"] == pytest.approx(float(mm["aAcc"]), rel=1e-6)  # mmseg sums in float32
    assert np.isnan(iou).sum() > 0  # some classes absent: nan-mean matters


def test_rounded_summary_equals_mmseg_compute_metrics():
    pairs = constructed(seed=1)
    m, ref = ours(pairs), theirs(pairs)
    summary = ref.compute_metrics(ref.results)  # mmseg's own: percent, 2 decimals
    figures = m.compute()
    assert summary["mIoU"] == pytest.approx(round(figures["miou"] * 100, 2), abs=1e-9)
    assert summary["mAcc"] == pytest.approx(round(figures["macc"] * 100, 2), abs=1e-9)
    assert summary["aAcc"] == pytest.approx(round(figures["aacc"] * 100, 2), abs=1e-9)


def test_ignore_index_pixels_are_left_out():
    gt = np.full((4, 4), 255, np.uint8)
    gt[0, 0] = 3
    pred = np.full((4, 4), 7, np.int64)
    pred[0, 0] = 3
    f = ours([(pred, gt)]).compute()
    assert f["aacc"] == 1.0 and f["miou"] == 1.0 and f["num_samples"] == 1
