"""The metrics, fed the adapter's predictions sample by sample, against an independent
re-implementation of SegmenTron's score.py (torch, histc), the guide's running averages against a
direct loop, and the protocol/reference wiring (the guide's order decides comparability)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.datasets import open_source
from zoo.datasets.cityscapes import CLASSES
from zoo.manifest import load_manifest
from zoo.metrics.segmentation import RunningAverageMetric, SegmentronMetric

from .conftest import synthetic_tree

M = load_manifest("fastscnn")
ADAPTER = M.adapter()


def feed(metric, logits: np.ndarray, targets) -> None:
    """One sample at a time, as the run does: the adapter's postprocess, then the metric."""
    for x, t in zip(logits, targets):
        metric.update(ADAPTER.postprocess(x, None), t)


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    return open_source(M, None, None, None, tmp_path_factory.mktemp("cache"))
EPS = 2.220446049250313e-16
NCLASS = 19


# --- upstream segmentron/utils/score.py, re-implemented (targets: trainIds with -1 = ignore) -----

def up_pix_accuracy(output: torch.Tensor, target: torch.Tensor, trunc: bool = True):
    """batch_pix_accuracy: upstream truncates the logits (argmax(output.long())); the guide's
    postprocess redefines it with a plain argmax (trunc=False)."""
    predict = torch.argmax(output.long() if trunc else output, 1) + 1
    target = target.long() + 1
    labeled = torch.sum(target > 0)
    correct = torch.sum((predict == target) * (target > 0))
    return int(correct), int(labeled)


def up_intersection_union(output: torch.Tensor, target: torch.Tensor, nclass: int = NCLASS):
    predict = (torch.argmax(output, 1) + 1).float()
    target = target.float() + 1
    predict = predict * (target > 0).float()
    intersection = predict * (predict == target).float()
    inter = torch.histc(intersection, bins=nclass, min=1, max=nclass)
    area_pred = torch.histc(predict, bins=nclass, min=1, max=nclass)
    area_lab = torch.histc(target, bins=nclass, min=1, max=nclass)
    return inter.double(), (area_pred + area_lab - inter).double()


class UpstreamMetric:
    """SegmentationMetric(19): totals over images; get() -> (pixAcc, mIoU, IoU per class)."""

    def __init__(self, trunc: bool = True):
        self.trunc = trunc
        self.inter, self.union = torch.zeros(NCLASS, dtype=torch.float64), torch.zeros(NCLASS, dtype=torch.float64)
        self.correct = self.labeled = 0

    def update(self, output, target):
        c, lab = up_pix_accuracy(output, target, self.trunc)
        i, u = up_intersection_union(output, target)
        self.correct, self.labeled = self.correct + c, self.labeled + lab
        self.inter, self.union = self.inter + i, self.union + u

    def get(self):
        iou = self.inter / (EPS + self.union)
        return self.correct / (EPS + self.labeled), float(iou.mean()), iou.numpy()


def _data(n=5, h=12, w=10, seed=0):
    """Logits in [-2.5, 2.5) (truncation to int merges many of them: the quirk matters) and trainId
    targets with ~15% ignored pixels; class 18 never occurs in the targets."""
    rng = np.random.default_rng(seed)
    logits = rng.uniform(-2.5, 2.5, (n, NCLASS, h, w)).astype(np.float32)
    # make the plain argmax agree with the target often, so IoUs are far from 0
    targets = rng.integers(0, NCLASS - 1, (n, h, w)).astype(np.uint8)
    agree = rng.random((n, h, w)) < 0.6
    for i, y, x in zip(*np.nonzero(agree)):
        logits[i, targets[i, y, x], y, x] = 2.7
    targets[rng.random((n, h, w)) < 0.15] = 255
    return logits, targets


def _upstream_target(t: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.where(t == 255, -1, t.astype(np.int64)))[None]


def test_segmentron_metric_matches_upstream_score_py():
    logits, targets = _data()
    ours = SegmentronMetric("upstream", "", CLASSES)
    feed(ours, logits, targets)
    up, up_plain = UpstreamMetric(trunc=True), UpstreamMetric(trunc=False)
    for x, t in zip(logits, targets):
        up.update(torch.from_numpy(x)[None], _upstream_target(t))
        up_plain.update(torch.from_numpy(x)[None], _upstream_target(t))
    pix, miou, iou = up.get()
    pix_plain, _, _ = up_plain.get()
    r = ours.compute()
    assert r["miou"] == pytest.approx(miou, rel=1e-12, abs=1e-15)
    assert r["pix_acc"] == pytest.approx(pix, rel=1e-12)
    assert r["pix_acc_true"] == pytest.approx(pix_plain, rel=1e-12)
    assert abs(r["pix_acc"] - r["pix_acc_true"]) > 0.05          # the truncation quirk really matters here
    np.testing.assert_allclose([c["iou"] for c in ours.per_class()], iou, rtol=1e-12)
    assert iou[18] == 0 and len(ours.per_class()) == 19           # absent class counts as 0 in the mean
    assert r["num_samples"] == 5


def test_running_averages_match_a_direct_loop():
    """The guide's AvgmIou / AvgpixAcc: after each image, the running dataset-level figures, averaged."""
    logits, targets = _data(n=6, seed=1)
    guide = RunningAverageMetric("guide", "", CLASSES)
    feed(guide, logits, targets)
    up, up_plain = UpstreamMetric(trunc=True), UpstreamMetric(trunc=False)
    s_miou = s_pix = s_pix_plain = 0.0
    for x, t in zip(logits, targets):
        up.update(torch.from_numpy(x)[None], _upstream_target(t))
        up_plain.update(torch.from_numpy(x)[None], _upstream_target(t))
        pix, miou, _ = up.get()
        s_miou, s_pix, s_pix_plain = s_miou + miou, s_pix + pix, s_pix_plain + up_plain.get()[0]
    r = guide.compute()
    assert guide.metric == "running_avg_miou"
    assert r["running_avg_miou"] == pytest.approx(s_miou / 6, rel=1e-12)
    assert r["running_avg_pix_acc"] == pytest.approx(s_pix / 6, rel=1e-12)
    assert r["running_avg_pix_acc_true"] == pytest.approx(s_pix_plain / 6, rel=1e-12)   # the guide's AvgpixAcc
    assert r["miou"] == pytest.approx(up.get()[1], rel=1e-12)
    assert r["running_avg_miou"] != pytest.approx(r["miou"], rel=1e-3)   # not the final mIoU
    # order dependent: the same images reversed give another running average, the same final mIoU
    rev = RunningAverageMetric("guide", "", CLASSES)
    feed(rev, logits[::-1], targets[::-1])
    assert rev.compute()["miou"] == pytest.approx(r["miou"], rel=1e-12)
    assert abs(rev.compute()["running_avg_miou"] - r["running_avg_miou"]) > 1e-4


def test_protocols_compare_like_with_like(builtin):
    protos = M.reference["protocols"]
    assert protos["guide"]["metric"] == "running_avg_miou" and protos["guide"]["value"] == 0.686667
    assert "running average" in protos["guide"]["source"] and "sort.log" in protos["guide"]["source"]
    assert protos["upstream"]["metric"] == "miou" and protos["upstream"]["value"] == 0.689
    ms = M.adapter().metrics(builtin)
    assert [(m.name, m.metric) for m in ms] == [("guide", "running_avg_miou"), ("upstream", "miou")]
    for m in ms:
        assert protos[m.name]["metric"] == m.metric      # each value is compared with a figure of its definition


def test_guide_protocol_comparable_only_in_the_guide_order(tmp_path):
    """The 500 val names (tiny synthetic images): the guide's order -> comparable; sorted -> flagged."""
    a = M.adapter()
    names = a.guide_order()
    synthetic_tree(tmp_path / "cs", names, size=(2, 4))
    src = open_source(M, tmp_path / "cs", None, None, tmp_path / "c", split="guide_order")
    assert src.ids == names and src.complete and len(src) == src.expected == 500
    assert src.provenance()["split"] == "guide_order (val)"
    guide = a.metrics(src)[0]
    assert guide.comparable is True and guide.not_comparable_reason is None
    assert "not comparable" not in guide.description
    assert f"[evaluated in order: the guide's sort.log order ({M.dir / 'guide_order.txt'})]" in guide.description
    # the same order given as an ids file: the guide's order too (the run marks the subset itself)
    src = open_source(M, tmp_path / "cs", M.dir / "guide_order.txt", None, tmp_path / "c")
    assert src.ids == names and a.metrics(src)[0].comparable is True
    # the evaluation split (sorted): the whole split, in another order
    src = open_source(M, tmp_path / "cs", None, None, tmp_path / "c")
    assert src.ids == sorted(names) and src.complete
    guide = a.metrics(src)[0]
    assert guide.comparable is False and "not comparable to the guide's figure" in guide.description
    assert "did not use the guide's sort.log order" in guide.not_comparable_reason
    # a part of the guide's order: not its order, but not flagged here (a subset is not comparable anyway)
    src = open_source(M, tmp_path / "cs", None, 10, tmp_path / "c", split="guide_order")
    guide = a.metrics(src)[0]
    assert not src.complete and guide.comparable is False and guide.not_comparable_reason is None
    assert "[evaluated in order: as listed in" in guide.description and ", first 10]" in guide.description


def test_upstream_figures_are_the_guide_metrics_final_figures(builtin):
    """The two protocols score the same predictions: the upstream metric's figures are the guide
    metric's (which adds the plain-argmax running pixAcc), whatever the samples."""
    rng = np.random.default_rng(5)
    guide, upstream = M.adapter().metrics(builtin)
    for _ in range(6):
        logits = rng.standard_normal((1, 19, 12, 16)).astype(np.float32) * 4
        target = rng.integers(0, 19, (12, 16)).astype(np.uint8)
        target[0, :4] = 255
        feed(guide, logits, [target])
        feed(upstream, logits, [target])
    g = guide.compute()
    assert g.pop("running_avg_pix_acc_true") > 0
    assert upstream.compute() == g and upstream.per_class() == guide.per_class()
    assert upstream.compute()["num_samples"] == 6 and upstream.metric == "miou"
