"""The guide's metric (upstream iouEval(20, ignoreIndex=19)) as the adapter builds it, fed the
adapter's predictions sample by sample, against upstream's computation re-implemented here with
torch one-hot tensors (conftest.UpstreamIouEval)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.datasets import open_source
from zoo.datasets.cityscapes import CLASSES
from zoo.manifest import load_manifest

from .conftest import UpstreamIouEval

M = load_manifest("erfnet")


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    return open_source(M, None, None, None, tmp_path_factory.mktemp("cache"))


def _feed(adapter, metric, logits: np.ndarray, targets) -> None:
    """One sample at a time, as the run does: postprocess (the argmax), then the metric."""
    for out, gt in zip(logits, targets):
        metric.update(adapter.postprocess(out, None), gt)


def _logits_for(pred: np.ndarray, rng) -> np.ndarray:
    """Random 20-class logits whose argmax is `pred` (N x H x W)."""
    logits = rng.standard_normal((pred.shape[0], 20, *pred.shape[1:])).astype(np.float32)
    np.put_along_axis(logits, pred[:, None].astype(np.int64), 10.0, axis=1)
    return logits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metric_equals_upstream_iou_eval(seed, builtin):
    rng = np.random.default_rng(seed)
    adapter = M.adapter()
    metric = adapter.metrics(builtin)
    assert [m.name for m in metric] == ["guide"] and metric[0].metric == "miou"
    m = metric[0]
    ref = UpstreamIouEval(20, 19)
    for n in (3, 1, 2):  # batches of different sizes, accumulated over the "dataset"
        # predictions over all 20 outputs (class 19 = void predicted too), labels 0-18 with
        # void given as 19 (after Relabel) or as 255 (the metric must ignore both)
        pred = rng.integers(0, 20, (n, 24, 40))
        if seed == 2:
            pred[pred > 10] = 3  # some classes never predicted
        gt = rng.integers(0, 19, (n, 24, 40))
        gt[rng.random(gt.shape) < 0.2] = 19
        gt_255 = gt.copy()
        gt_255[rng.random(gt.shape) < 0.5 * (gt == 19)] = 255
        if seed == 1:
            gt[gt == 4] = 19  # a class absent from the labels: IoU 0 (no NaN handling), as upstream
            gt_255[gt_255 == 4] = 19
        _feed(adapter, m, _logits_for(pred, rng), list(gt_255.astype(np.uint8)))
        ref.add_batch(torch.from_numpy(pred[:, None]).long(), torch.from_numpy(gt[:, None]).long())
    want_mean, want_per = ref.iou()
    got = m.compute()
    assert got["num_samples"] == 6
    assert got["miou"] == pytest.approx(want_mean, abs=1e-12)
    per = m.per_class()
    assert [p["class"] for p in per] == list(CLASSES) and len(per) == 19
    np.testing.assert_allclose([p["iou"] for p in per], want_per, atol=1e-12)
    if seed == 1:
        assert per[4]["iou"] == 0.0


def test_void_prediction_is_a_false_negative(builtin):
    # a pixel of class 0 predicted as 19 (void) counts as FN for class 0; void-labelled pixels
    # never count, whatever is predicted
    adapter = M.adapter()
    m = adapter.metrics(builtin)[0]
    gt = np.array([[0, 0, 19, 255]], np.uint8)
    pred = np.array([[[0, 19, 0, 5]]])
    _feed(adapter, m, _logits_for(pred, np.random.default_rng(0)), [gt])
    per = {p["class"]: p["iou"] for p in m.per_class()}
    assert per["road"] == pytest.approx(0.5)  # TP 1, FN 1, FP 0
    assert per["pole"] == 0.0                 # class 5 predicted only on a void pixel: no FP
    assert m.compute()["miou"] == pytest.approx(0.5 / 19)
