"""Metric states merge exactly: every metric family fed 23 samples in one process (`update`) gives
the same figures, to the last digit (==, NaN-aware), as the same samples split into 1, 2, 3 or 5
contiguous shards, each shard's `Collector` contributions pickled and unpickled (as Ray ships
them) and replayed on a fresh metric in shard order. Replaying the shards out of order changes the
order-dependent figures (running averages, batch groups), so the comparison can fail. The samples
are random but seeded, with ignore pixels and classes absent from the labels or the predictions."""
from __future__ import annotations

import contextlib
import io
import math
import pickle

import cv2
import numpy as np
import pytest

from zoo.metrics import Collector, replay
from zoo.metrics.binary import BinaryIoU
from zoo.metrics.segmentation import (DatasetIoU, IouEvalMetric, RunningAverageMetric, SegmentronMetric,
                                      class_argmax_pair)

N = 23
SHARDS = (1, 2, 3, 5)
H, W = 24, 32
CLASSES = ("road", "wall", "car", "sky", "tree", "bus")   # "bus" never in the labels, "tree" never predicted
VOID = 255

try:
    import pycocotools  # noqa: F401
    HAVE_COCO = True
except ImportError:
    HAVE_COCO = False


def shards_of(samples: list, k: int) -> list[list]:
    """k contiguous runs of the samples in id order (sizes differ by at most one)."""
    return [[samples[i] for i in part] for part in np.array_split(np.arange(len(samples)), k)]


def collect(make, shard: list) -> bytes:
    """One worker: a fresh metric wrapped in a Collector, fed the shard; its contributions as Ray
    would ship them (pickled)."""
    c = Collector(make())
    for prediction, target in shard:
        c.update(prediction, target)
    return pickle.dumps(c.contributions)


def merged(make, samples: list, k: int, order=None):
    """The driver: a fresh metric with the shards' contributions replayed in `order` (default:
    shard order, i.e. id order)."""
    blobs = [collect(make, s) for s in shards_of(samples, k)]
    metric = make()
    for i in order or range(k):
        replay(metric, pickle.loads(blobs[i]))
    return metric


def single(make, samples: list):
    metric = make()
    for prediction, target in samples:
        metric.update(prediction, target)
    return metric


def same(a, b) -> bool:
    """Exact equality, NaN equal to NaN, through dicts, lists and tuples."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def assert_merges_exactly(make, samples: list) -> None:
    ref = single(make, samples)
    want = (ref.compute(), ref.per_class())
    for k in SHARDS:
        m = merged(make, samples, k)
        got = (m.compute(), m.per_class())
        assert same(got, want), f"{k} shards: {got} != {want}"


# ---- samples ---------------------------------------------------------------------------------

def _labels(rng) -> np.ndarray:
    """A uint8 label map over classes 0..4 (5 = "bus" absent) with ~10% VOID pixels."""
    gt = rng.integers(0, 5, (H, W)).astype(np.uint8)
    gt[rng.random((H, W)) < 0.1] = VOID
    return gt


def _near(rng, gt: np.ndarray, n_pred: int, never: int) -> np.ndarray:
    """A prediction agreeing with gt on ~60% of the pixels, never predicting class `never`."""
    pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, n_pred, gt.shape)).astype(np.int64)
    pred[(pred == never) | (pred >= n_pred)] = 0
    return pred


def label_samples(seed: int = 0) -> list:
    """(prediction {"labels"}, target) pairs; every third prediction is uint8 (the saved-run dtype,
    the OpenCV fast path), the others int64 (the bincount path)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(N):
        gt = _labels(rng)
        pred = _near(rng, gt, len(CLASSES) - 1, never=4)   # "bus" neither labelled nor predicted
        out.append(({"labels": pred.astype(np.uint8) if i % 3 == 0 else pred}, gt))
    return out


def iou_eval_samples(seed: int = 1) -> list:
    """erfnet-style: classes 0..5, ignore = 6 (also the void label), 7 outputs (6 = void predicted)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(N):
        gt = _labels(rng)
        gt[gt == VOID] = 6 if i % 2 else VOID       # both void spellings
        pred = _near(rng, np.where(gt > 6, 0, gt), 7, never=4)
        out.append(({"labels": pred}, gt))
    return out


def segmentron_samples(seed: int = 2) -> list:
    """Logits around the label with magnitudes where trunc changes the argmax; both argmaxes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(N):
        gt = _labels(rng)
        logits = rng.normal(0, 1.5, (len(CLASSES), H, W)).astype(np.float32)
        logits[4] -= 5                                 # "tree" (almost) never predicted
        hit = (gt < len(CLASSES)) & (rng.random(gt.shape) < 0.5)
        np.add.at(logits, (gt[hit].astype(np.int64), *np.nonzero(hit)), 2.0)
        labels, labels_trunc = class_argmax_pair(logits)
        out.append(({"labels": labels, "labels_trunc": labels_trunc}, gt))
    return out


def binary_samples(seed: int = 3) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(N):
        t = rng.random((H, W)) < rng.uniform(0.05, 0.5)
        p = t ^ (rng.random((H, W)) < 0.2)
        if i == 7:
            p, t = np.zeros_like(p), np.zeros_like(t)  # both empty: IoU 1 through the smoothing
        out.append(({"m": p}, t))
    return out


# ---- exact merges ------------------------------------------------------------------------------

def test_binary_iou_image_aggregate_merges_exactly():
    assert_merges_exactly(lambda: BinaryIoU("g", "", key="m"), binary_samples())


@pytest.mark.parametrize("group", [1, 4, 16, 64])
def test_binary_iou_batch_aggregate_merges_exactly(group):
    """Groups of 4 and 16 straddle every shard boundary of 2, 3 and 5 shards."""
    assert_merges_exactly(lambda: BinaryIoU("u", "", key="m", aggregate="batch", group=group), binary_samples())


def test_iou_eval_merges_exactly():
    assert_merges_exactly(lambda: IouEvalMetric("guide", "", CLASSES, n_outputs=7, ignore=6), iou_eval_samples())


def test_segmentron_merges_exactly_running_averages_included():
    samples = segmentron_samples()
    assert_merges_exactly(lambda: SegmentronMetric("upstream", "", CLASSES), samples)
    r = single(lambda: SegmentronMetric("upstream", "", CLASSES), samples).compute()
    assert r["pix_acc"] != r["pix_acc_true"]           # the truncating argmax really differs here


def test_running_average_merges_exactly():
    assert_merges_exactly(lambda: RunningAverageMetric("guide", "", CLASSES, comparable=True), segmentron_samples())


def test_dataset_iou_merges_exactly_with_nan_classes():
    samples = label_samples()
    assert_merges_exactly(lambda: DatasetIoU("mmseg", "", CLASSES), samples)
    table = single(lambda: DatasetIoU("mmseg", "", CLASSES), samples).per_class()
    assert table[5]["iou"] is None and table[5]["acc"] is None   # "bus": NaN (absent from both)
    assert table[4]["iou"] == 0.0                                # "tree": labelled, never predicted


# ---- the comparison can fail: order-dependent figures --------------------------------------------

def test_shards_replayed_out_of_order_change_the_running_average():
    samples = segmentron_samples()
    make = lambda: RunningAverageMetric("guide", "", CLASSES)  # noqa: E731
    right = merged(make, samples, 3).compute()
    wrong = merged(make, samples, 3, order=[2, 0, 1]).compute()
    assert not same(wrong, right)
    for key in ("running_avg_miou", "running_avg_pix_acc", "running_avg_pix_acc_true"):
        assert wrong[key] != right[key]
    for key in ("miou", "pix_acc", "pix_acc_true", "num_samples"):   # dataset totals: order-free
        assert wrong[key] == right[key]


def test_shards_replayed_out_of_order_change_the_batch_iou():
    samples = binary_samples()
    batch = lambda: BinaryIoU("u", "", key="m", aggregate="batch", group=4)  # noqa: E731
    backwards = [4, 3, 2, 1, 0]
    assert merged(batch, samples, 5, order=backwards).compute()["iou"] != merged(batch, samples, 5).compute()["iou"]
    image = lambda: BinaryIoU("g", "", key="m")  # noqa: E731
    a, b = merged(image, samples, 5, order=backwards).compute()["iou"], merged(image, samples, 5).compute()["iou"]
    assert a == pytest.approx(b, rel=1e-12)          # the per-image mean: only the float sum order differs


# ---- the contributions -----------------------------------------------------------------------

def test_contributions_are_compact_and_leave_the_metric_untouched():
    pred, gt = label_samples()[0]
    m = DatasetIoU("mmseg", "", CLASSES)
    c = m.contribution(pred, gt)
    assert m.n == 0 and m.cm.mat.sum() == 0          # contribution reads settings only
    assert isinstance(c, np.ndarray) and c.dtype.kind == "i" and c.shape == (6, 6)
    assert c.sum() == np.count_nonzero(gt != VOID) and c.nbytes < gt.size * 8
    assert len(pickle.dumps(c)) < 600                # a 6x6 matrix, not a 24x32 map

    pred, gt = iou_eval_samples()[1]
    c = IouEvalMetric("g", "", CLASSES, n_outputs=7, ignore=6).contribution(pred, gt)
    assert isinstance(c, np.ndarray) and c.dtype.kind == "i" and c.shape == (6, 7)

    pred, gt = segmentron_samples()[0]
    m = RunningAverageMetric("g", "", CLASSES)
    mat, correct = m.contribution(pred, gt)
    assert mat.shape == (6, 6) and mat.dtype.kind == "i" and type(correct) is int
    assert m.n == 0 and m.sum_running_miou == 0.0

    pred, gt = binary_samples()[0]
    c = BinaryIoU("g", "", key="m").contribution(pred, gt)
    assert type(c) is tuple and [type(v) for v in c] == [int, int]


def test_collector_stands_in_for_the_metric_and_drains():
    m = SegmentronMetric("upstream", "", CLASSES)
    c = Collector(m)
    assert (c.name, c.metric, c.wrapped) == ("upstream", "miou", m)
    samples = segmentron_samples()
    for prediction, target in samples[:4]:
        c.update(prediction, target)
    assert len(c.contributions) == 4 and m.n == 0    # the wrapped metric itself is not fed
    first = c.drain()
    assert len(first) == 4 and c.contributions == []
    for prediction, target in samples[4:]:
        c.update(prediction, target)
    assert same(replay(SegmentronMetric("upstream", "", CLASSES), first + c.drain()).compute(),
                single(lambda: SegmentronMetric("upstream", "", CLASSES), samples).compute())


def test_a_failed_contribution_counts_nothing():
    m = IouEvalMetric("g", "", CLASSES, n_outputs=7, ignore=6)
    c = Collector(m)
    with pytest.raises(ValueError, match="differ in shape"):
        c.update({"labels": np.zeros((2, 2), np.int64)}, np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="differ in shape"):
        m.update({"labels": np.zeros((2, 2), np.int64)}, np.zeros((3, 3), np.uint8))
    assert c.contributions == [] and m.n == 0 and m.cm.mat.sum() == 0


# ---- COCO box AP ---------------------------------------------------------------------------------

def coco_case(seed: int = 4):
    """A pycocotools index of 23 images with boxes of 6 categories (small, medium and large), and
    per image Detections: jittered copies of most ground-truth boxes plus false positives."""
    from pycocotools.coco import COCO

    from zoo.datasets.coco import CAT_IDS, CLASSES as COCO_CLASSES
    from zoo.predictions import Detections
    rng = np.random.default_rng(seed)
    cats = [CAT_IDS[k] for k in (0, 2, 5, 16, 39, 56)]
    images, anns, samples = [], [], []
    for i in range(N):
        image_id = 1000 + 7 * i
        images.append({"id": image_id, "width": 320, "height": 240, "file_name": f"{image_id:012d}.jpg"})
        boxes, scores, labels = [], [], []
        for _ in range(int(rng.integers(0, 5))):
            w, h = (float(v) for v in rng.choice([12, 50, 130]) * rng.uniform(0.7, 1.3, 2))
            x, y = float(rng.uniform(0, 320 - w)), float(rng.uniform(0, 240 - h))
            cat = int(rng.choice(cats))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            if rng.random() < 0.8:
                dx, dy = rng.normal(0, 0.08 * w), rng.normal(0, 0.08 * h)
                boxes.append([x + dx, y + dy, x + dx + w, y + dy + h])
                scores.append(float(rng.uniform(0.3, 1.0)))
                labels.append(cat if rng.random() < 0.9 else int(rng.choice(cats)))
        for _ in range(int(rng.integers(0, 3))):
            x, y = float(rng.uniform(0, 250)), float(rng.uniform(0, 180))
            boxes.append([x, y, x + 40, y + 30])
            scores.append(float(rng.uniform(0.05, 0.6)))
            labels.append(int(rng.choice(cats)))
        samples.append((Detections.from_boxes(image_id, np.asarray(boxes).reshape(-1, 4), scores, labels), image_id))
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": c, "name": n} for c, n in zip(CAT_IDS, COCO_CLASSES)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, samples


@pytest.mark.skipif(not HAVE_COCO, reason="pycocotools is not installed in this environment (only the "
                                          "COCO models' environments have it)")
def test_coco_box_ap_merges_exactly(tmp_path):
    from zoo.metrics.coco import CocoBoxAP
    coco, samples = coco_case()
    make = lambda: CocoBoxAP("box", "", coco)  # noqa: E731
    assert_merges_exactly(make, samples)
    r = single(make, samples).compute()
    assert 0.2 < r["map"] < 0.95 and r["map_s"] != r["map_l"]   # a real evaluation, not a trivial one
    assert sum(p["ap"] is not None for p in single(make, samples).per_class()) == 6

    # the drawings are made where the contributions are (the workers); the driver only merges
    paths = {}
    for _, image_id in samples:
        paths[image_id] = tmp_path / "images" / f"{image_id}.png"
        paths[image_id].parent.mkdir(exist_ok=True)
        cv2.imwrite(str(paths[image_id]), np.full((240, 320, 3), 128, np.uint8))
    drawn = tmp_path / "drawn"
    drawn.mkdir()
    worker = lambda: CocoBoxAP("box", "", coco, visualize=str(drawn), image_path=paths.__getitem__)  # noqa: E731
    blobs = [collect(worker, s) for s in shards_of(samples, 3)]
    assert len(list(drawn.iterdir())) == N
    driver = make()
    for blob in blobs:
        replay(driver, pickle.loads(blob))
    assert same((driver.compute(), driver.per_class()), (r, single(make, samples).per_class()))
    image_id, rows = pickle.loads(blobs[0])[0]
    assert image_id == samples[0][1] and rows == samples[0][0].rows
