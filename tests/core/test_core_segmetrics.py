"""zoo.metrics.segmentation for Cityscapes: ConfusionMatrix, IouEvalMetric (erfnet_pytorch iouEval)
and SegmentronMetric (SegmenTron SegmentationMetric + the Ascend running average), each against a
re-implementation written here from the description of the upstream code (FACTS.md s.2, s.3),
with torch one-hot tensors and torch.histc as upstream computes, on random data and hand cases.
The metrics are fed one sample's prediction (label maps: numpy's argmax of the logits here) at a
time; class_argmax / class_argmax_pair (the adapters' argmax) against numpy's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.datasets.cityscapes import CLASSES, IGNORE
from zoo.metrics.segmentation import (ConfusionMatrix, IouEvalMetric, SegmentronMetric, class_argmax,
                                      class_argmax_pair)

N_CLASSES = len(CLASSES)      # 19 evaluated classes
ERF_OUTPUTS = 20              # ErfNet: 19 classes + class 19 "void"
ERF_IGNORE = 19
SEG_EPS = 2.220446049250313e-16


# ------------------------------------------------------------------ reference: erfnet iouEval

class RefIouEval:
    """iouEval(nClasses=20, ignoreIndex=19) as FACTS s.2 describes it: one-hot prediction and
    target over the 20 classes, the ignore channel of the target kept aside, channels 0..18
    compared; TP = pred & gt, FP = pred & !gt & !ignore, FN = !pred & gt (a pixel predicted 19
    is FN for its true class); IoU = TP / (TP + FP + FN + 1e-15); plain mean."""

    def __init__(self, n_classes: int = ERF_OUTPUTS, ignore: int = ERF_IGNORE):
        self.n, self.ignore = n_classes, ignore
        self.tp = torch.zeros(ignore, dtype=torch.float64)
        self.fp = torch.zeros(ignore, dtype=torch.float64)
        self.fn = torch.zeros(ignore, dtype=torch.float64)

    def add_batch(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        pred = logits.max(1)[1]                                               # (N, H, W)
        x = torch.nn.functional.one_hot(pred, self.n).permute(0, 3, 1, 2).float()
        y = torch.nn.functional.one_hot(labels.long(), self.n).permute(0, 3, 1, 2).float()
        void = y[:, self.ignore:self.ignore + 1]
        x, y = x[:, :self.ignore], y[:, :self.ignore]
        dims = (0, 2, 3)
        self.tp += (x * y).sum(dims).double()
        self.fp += (x * (1 - y - void)).sum(dims).double()
        self.fn += ((1 - x) * y).sum(dims).double()

    def iou(self) -> tuple[float, torch.Tensor]:
        per_class = self.tp / (self.tp + self.fp + self.fn + 1e-15)
        return float(per_class.mean()), per_class


# ------------------------------------------------------------------ reference: SegmenTron

class RefSegmentron:
    """SegmenTron's SegmentationMetric(19) fed one image at a time, as FACTS s.3 describes it,
    plus the Ascend postprocess's running sums.

    pixAcc: prediction = argmax of the logits cast to int64 (truncation; first index on ties),
    shifted +1; target +1 (so -1 -> 0 = unlabelled); correct = equal & labelled.
    IoU: prediction = argmax of the float logits +1, zeroed where unlabelled; areas counted by
    torch.histc(bins=19, min=1, max=19); union = pred + label - inter. Totals in float32 tensors
    (torch.zeros(19)) for the areas, Python ints for the pixel counts. get(): eps 2.22e-16."""

    def __init__(self, nclass: int = N_CLASSES):
        self.nclass = nclass
        self.inter = torch.zeros(nclass)
        self.union = torch.zeros(nclass)
        self.correct = 0
        self.labelled = 0
        self.sum_miou = 0.0
        self.sum_pixacc = 0.0

    def _hist(self, t: torch.Tensor) -> torch.Tensor:
        return torch.histc(t, bins=self.nclass, min=1, max=self.nclass)

    def add_image(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """logits (1, C, H, W) float32; target (1, H, W) int64 with -1 = unlabelled."""
        tgt = target.long() + 1
        labelled = tgt > 0
        pred_acc = torch.argmax(logits.long(), 1) + 1
        self.correct += int(((pred_acc == tgt) & labelled).sum())
        self.labelled += int(labelled.sum())

        pred = (torch.argmax(logits, 1) + 1).float() * labelled.float()
        tgt_f = tgt.float()
        inter = pred * (pred == tgt_f).float()
        a_inter, a_pred, a_lab = self._hist(inter), self._hist(pred), self._hist(tgt_f)
        self.inter += a_inter
        self.union += a_pred + a_lab - a_inter

        pix_acc, miou = self.get()
        self.sum_pixacc += pix_acc
        self.sum_miou += miou

    def get(self) -> tuple[float, float]:
        pix_acc = 1.0 * self.correct / (SEG_EPS + self.labelled)
        iou = 1.0 * self.inter / (SEG_EPS + self.union)
        return pix_acc, iou.mean().item()

    def per_class(self) -> np.ndarray:
        return (1.0 * self.inter / (SEG_EPS + self.union)).numpy()


# ------------------------------------------------------------------ data

def _batches(seed: int, channels: int, sizes=(3, 1, 2, 4), hw=(12, 20), scale: float = 1.0,
             label_values=None):
    """Random float32 logits (n, channels, H, W) and random uint8 labels per batch."""
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        logits = (rng.standard_normal((n, channels, *hw)) * scale).astype(np.float32)
        labels = [rng.choice(label_values, size=hw).astype(np.uint8) for _ in range(n)]
        out.append((logits, labels))
    return out


def _one_hot_logits(pred: np.ndarray, channels: int, high: float = 5.0) -> np.ndarray:
    """(1, channels, H, W) logits whose argmax is `pred` (H, W)."""
    pred = np.asarray(pred)
    logits = np.zeros((1, channels, *pred.shape), np.float32)
    for idx, c in np.ndenumerate(pred):
        logits[(0, c) + idx] = high
    return logits


def _erf_prediction(logits: np.ndarray, dtype=np.uint8) -> dict:
    """ErfNet's prediction of one (C, H, W) map: the argmax over every class (numpy's)."""
    return {"labels": logits.argmax(0).astype(dtype)}


def _seg_prediction(logits: np.ndarray) -> dict:
    """Fast-SCNN's prediction of one (C, H, W) map: numpy's argmax of the logits and of their
    truncation (upstream's argmax(output.long()))."""
    return {"labels": logits.argmax(0).astype(np.uint8), "labels_trunc": np.trunc(logits).argmax(0).astype(np.uint8)}


def _feed(metric, batches, predict) -> None:
    """Every sample of the batches, one at a time, in order."""
    for logits, labels in batches:
        for x, t in zip(logits, labels):
            metric.update(predict(x), t)


def _erf_metric() -> IouEvalMetric:
    return IouEvalMetric("guide", "erfnet iouEval", CLASSES, n_outputs=ERF_OUTPUTS, ignore=ERF_IGNORE)


def _seg_metric() -> SegmentronMetric:
    return SegmentronMetric("upstream", "SegmenTron SegmentationMetric", CLASSES)


# ------------------------------------------------------------------ ConfusionMatrix

def test_confusion_matrix_counts_and_accumulates():
    cm = ConfusionMatrix(3)
    gt = np.array([[0, 1, 2], [2, 2, 1]], np.uint8)
    pred = np.array([[0, 2, 2], [1, 2, 1]], np.int64)
    m = cm.update(pred, gt)
    assert m.tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, 2]]
    m2 = cm.update(np.zeros((1, 2), np.int64), np.array([[1, 0]], np.uint8))
    assert m2.tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert cm.mat.tolist() == [[2, 0, 0], [1, 1, 1], [0, 1, 2]]
    assert cm.mat.dtype == np.int64


def test_confusion_matrix_ignores_gt_at_or_above_n_gt():
    cm = ConfusionMatrix(n_gt=3, n_pred=4)
    gt = np.array([0, 3, 255, 1, 2, 200], np.uint8)
    pred = np.array([0, 1, 3, 3, 2, 0], np.int64)
    m = cm.update(pred, gt)
    assert m.shape == (3, 4)
    assert m.sum() == 3                                       # only gt 0, 1, 2 counted
    assert m[0, 0] == 1 and m[1, 3] == 1 and m[2, 2] == 1


def test_confusion_matrix_shape_mismatch_raises():
    cm = ConfusionMatrix(19)
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        cm.update(np.zeros((4, 5), np.int64), np.zeros((5, 4), np.uint8))
    with pytest.raises(ValueError):
        cm.update(np.zeros((1, 4, 5), np.int64), np.zeros((4, 5), np.uint8))
    assert cm.mat.sum() == 0                                  # nothing added by a failed update


# ------------------------------------------------------------------ IouEvalMetric

@pytest.mark.parametrize("void_value", [ERF_IGNORE, IGNORE])
def test_iou_eval_matches_reference_on_random_batches(void_value: int):
    batches = _batches(0, ERF_OUTPUTS, label_values=np.arange(20))   # 19 = void
    ref, ours = RefIouEval(), _erf_metric()
    for logits, labels in batches:
        ref.add_batch(torch.from_numpy(logits), torch.from_numpy(np.stack(labels)))
    # our targets may carry the void either as 19 (erfnet's Relabel) or as 255
    _feed(ours, [(logits, [np.where(lab == ERF_IGNORE, void_value, lab).astype(np.uint8) for lab in labels])
                 for logits, labels in batches], _erf_prediction)
    ref_miou, ref_iou = ref.iou()
    got = ours.compute()
    assert got["num_samples"] == 10
    assert got["miou"] == pytest.approx(ref_miou, rel=1e-12)
    per_class = ours.per_class()
    assert [d["class"] for d in per_class] == list(CLASSES)
    np.testing.assert_allclose([d["iou"] for d in per_class], ref_iou.numpy(), rtol=1e-12, atol=0)
    # a sanity check that the data exercise the quirks: void targets and void predictions
    preds = np.concatenate([b[0].argmax(1).ravel() for b in batches])
    gts = np.concatenate([np.stack(b[1]).ravel() for b in batches])
    assert (preds == ERF_IGNORE).sum() > 50 and (gts == ERF_IGNORE).sum() > 50


def test_iou_eval_same_figures_from_int64_and_saved_uint8_predictions():
    """A live run's argmax (int64) and the uint8 map a saved prediction holds score the same."""
    batches = _batches(1, ERF_OUTPUTS, label_values=np.arange(20))
    live, saved = _erf_metric(), _erf_metric()
    _feed(live, batches, lambda x: _erf_prediction(x, np.int64))
    _feed(saved, batches, _erf_prediction)
    assert live.compute() == saved.compute() and live.per_class() == saved.per_class()


def _erf_case(preds, gts) -> list[float]:
    m = _erf_metric()
    m.update({"labels": np.array(preds, np.uint8)}, np.array(gts, np.uint8))
    ref = RefIouEval()
    ref.add_batch(torch.from_numpy(_one_hot_logits(np.array(preds), ERF_OUTPUTS)),
                  torch.from_numpy(np.where(np.array(gts) == IGNORE, ERF_IGNORE, np.array(gts))[None]))
    ious = [d["iou"] for d in m.per_class()]
    np.testing.assert_allclose(ious, ref.iou()[1].numpy(), rtol=1e-12)
    assert m.compute()["miou"] == pytest.approx(sum(ious) / 19, rel=1e-12)
    return ious


def test_iou_eval_prediction_of_void_is_a_false_negative():
    # two pixels of class 3: one right, one predicted as the void class 19 -> IoU_3 = 1 / 2
    ious = _erf_case([[3, 19]], [[3, 3]])
    assert ious[3] == pytest.approx(0.5)
    assert sum(ious) == pytest.approx(0.5)                    # every other class: 0 / 1e-15 = 0


def test_iou_eval_void_ground_truth_is_not_a_false_positive():
    # class 3 predicted on a pixel of class 3 and on a void pixel (19 or 255): IoU_3 = 1
    for void in (ERF_IGNORE, IGNORE):
        ious = _erf_case([[3, 3]], [[3, void]])
        assert ious[3] == pytest.approx(1.0)
    # ... but on a pixel of class 5 it is a FP for 3 and a FN for 5
    ious = _erf_case([[3, 3]], [[3, 5]])
    assert ious[3] == pytest.approx(0.5) and ious[5] == 0.0


def test_iou_eval_absent_classes_count_as_zero_in_the_mean():
    ious = _erf_case([[0, 1], [1, 0]], [[0, 1], [1, 0]])
    assert ious[:2] == [pytest.approx(1.0)] * 2 and ious[2:] == [0.0] * 17
    m = _erf_metric()
    m.update({"labels": np.array([[0, 1]], np.uint8)}, np.array([[0, 1]], np.uint8))
    assert m.compute()["miou"] == pytest.approx(2 / 19)


# ------------------------------------------------------------------ SegmentronMetric

def _ref_segmentron(batches) -> RefSegmentron:
    ref = RefSegmentron()
    for logits, labels in batches:
        for x, t in zip(logits, labels):
            tgt = t.astype(np.int64)
            tgt[tgt == IGNORE] = -1                            # our 255 == upstream's -1
            ref.add_image(torch.from_numpy(x[None]), torch.from_numpy(tgt[None]))
    return ref


def _seg_batches(seed: int):
    # logits in about [-3, 3] so that int64 truncation merges many of them (ties); labels
    # 0..18 and 255 (unlabelled)
    return _batches(seed, N_CLASSES, scale=1.2, label_values=np.r_[np.arange(19), IGNORE, IGNORE])


@pytest.mark.parametrize("seed", [0, 1])
def test_segmentron_matches_reference_on_random_batches(seed: int):
    batches = _seg_batches(seed)
    ours = _seg_metric()
    _feed(ours, batches, _seg_prediction)
    ref = _ref_segmentron(batches)
    pix_acc, miou = ref.get()
    got = ours.compute()
    n = sum(len(b[1]) for b in batches)
    assert got["num_samples"] == n
    assert got["miou"] == pytest.approx(miou, rel=1e-6)      # upstream areas are float32
    assert got["pix_acc"] == pytest.approx(pix_acc, rel=1e-12)
    assert got["running_avg_miou"] == pytest.approx(ref.sum_miou / n, rel=1e-6)
    assert got["running_avg_pix_acc"] == pytest.approx(ref.sum_pixacc / n, rel=1e-12)
    per_class = ours.per_class()
    assert len(per_class) == 19 and [d["class"] for d in per_class] == list(CLASSES)
    np.testing.assert_allclose([d["iou"] for d in per_class], ref.per_class(), rtol=1e-6)
    # truncation matters on these data: the pixAcc with trunc differs from the true one
    assert got["pix_acc"] != pytest.approx(got["pix_acc_true"], rel=1e-3)
    true_correct = sum(int(((x.argmax(0) == t) & (t < 19)).sum()) for b in batches for x, t in zip(*b))
    labelled = sum(int((t < 19).sum()) for b in batches for t in b[1])
    assert got["pix_acc_true"] == pytest.approx(true_correct / labelled, rel=1e-12)


def test_segmentron_running_average_is_mean_of_cumulative_values():
    """running_avg_* = mean over images of the dataset-level value after each image, computed
    here by a direct loop (numpy, float64) independent of both implementations above."""
    batches = _seg_batches(2)
    images = [(x, t) for logits, labels in batches for x, t in zip(logits, labels)]
    inter, union = np.zeros(19), np.zeros(19)
    correct = labelled = 0
    mious, accs = [], []
    for x, t in images:
        pred, pred_trunc, lab = x.argmax(0), np.trunc(x).argmax(0), t < 19
        for c in range(19):
            p, g = (pred == c) & lab, t == c
            inter[c] += (p & g).sum()
            union[c] += (p | g).sum()
        correct += int(((pred_trunc == t) & lab).sum())
        labelled += int(lab.sum())
        mious.append(np.mean(inter / (SEG_EPS + union)))
        accs.append(correct / (SEG_EPS + labelled))
    ours = _seg_metric()
    _feed(ours, batches, _seg_prediction)
    got = ours.compute()
    assert got["running_avg_miou"] == pytest.approx(np.mean(mious), rel=1e-12)
    assert got["running_avg_pix_acc"] == pytest.approx(np.mean(accs), rel=1e-12)
    assert got["miou"] == pytest.approx(mious[-1], rel=1e-12)
    assert got["pix_acc"] == pytest.approx(accs[-1], rel=1e-12)
    assert got["running_avg_miou"] != pytest.approx(got["miou"], rel=1e-6)   # order dependent
    # another order: same final values, a different running average
    rev = _seg_metric()
    for x, t in reversed(images):
        rev.update(_seg_prediction(x), t)
    got_rev = rev.compute()
    assert got_rev["miou"] == pytest.approx(got["miou"], rel=1e-12)
    assert got_rev["running_avg_miou"] != pytest.approx(got["running_avg_miou"], rel=1e-6)


def test_segmentron_truncated_argmax_hand_case():
    # pixel A: class 2 at 0.9, the rest 0.1 -> plain argmax 2; truncated all 0 -> argmax 0 (first)
    # pixel B: class 4 at 2.5 -> 4 either way; pixel C: unlabelled (255), predicted 7
    logits = np.zeros((1, 19, 1, 3), np.float32)
    logits[0, :, 0, 0] = 0.1
    logits[0, 2, 0, 0] = 0.9
    logits[0, 4, 0, 1] = 2.5
    logits[0, 7, 0, 2] = 3.0
    target = np.array([[2, 4, IGNORE]], np.uint8)
    m = _seg_metric()
    m.update(_seg_prediction(logits[0]), target)
    got = m.compute()
    assert got["pix_acc"] == pytest.approx(0.5)              # A wrong after truncation
    assert got["pix_acc_true"] == pytest.approx(1.0)
    ious = [d["iou"] for d in m.per_class()]
    assert ious[2] == pytest.approx(1.0) and ious[4] == pytest.approx(1.0)
    assert ious[7] == 0.0                                      # the unlabelled pixel is not a FP
    assert got["miou"] == pytest.approx(2 / 19)
    ref = _ref_segmentron([(logits, [target])])
    assert ref.get() == (pytest.approx(0.5), pytest.approx(2 / 19))
    # one image: the running averages are the final values
    assert got["running_avg_miou"] == pytest.approx(got["miou"])
    assert got["running_avg_pix_acc"] == pytest.approx(got["pix_acc"])


def test_segmentron_negative_logits_truncate_toward_zero():
    # -0.5 -> 0 beats -1.5 -> -1: the truncated argmax agrees with the plain one here
    logits = np.full((1, 19, 1, 1), -1.5, np.float32)
    logits[0, 6, 0, 0] = -0.5
    m = _seg_metric()
    m.update(_seg_prediction(logits[0]), np.array([[6]], np.uint8))
    assert m.compute()["pix_acc"] == pytest.approx(1.0)


def test_segmentron_fed_the_adapters_argmax_pair_equals_numpys():
    """class_argmax_pair (what Fast-SCNN's postprocess makes) gives the figures numpy's argmaxes give."""
    batches = _seg_batches(3)
    ours, ref = _seg_metric(), _seg_metric()

    def pair(x):
        labels, trunc = class_argmax_pair(x)
        return {"labels": labels.astype(np.uint8), "labels_trunc": trunc.astype(np.uint8)}
    _feed(ours, batches, pair)
    _feed(ref, batches, _seg_prediction)
    assert ours.compute() == ref.compute()


def test_confusion_matrix_rejects_out_of_range_predictions_and_ignores_negative_gt():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"prediction values must be in \[0, 3\)"):
        cm.update(np.array([3, 0]), np.array([0, 1]))
    # SegmenTron's -1 convention for unlabelled pixels (signed dtype): ignored, not a crash
    cm.update(np.array([1, 2, 0]), np.array([-1, 2, 0], dtype=np.int16))
    assert cm.mat.sum() == 2 and cm.mat[2, 2] == 1 and cm.mat[0, 0] == 1


def test_metrics_check_the_prediction_maps():
    seg = SegmentronMetric("guide", "", CLASSES)
    gt = np.zeros((2, 2), np.uint8)
    ok = {"labels": np.zeros((2, 2), np.uint8), "labels_trunc": np.zeros((2, 2), np.uint8)}
    with pytest.raises(ValueError, match=r"prediction values must be in \[0, 19\)"):
        seg.update({**ok, "labels": np.full((2, 2), 19, np.uint8)}, gt)     # a 20th class
    with pytest.raises(ValueError, match="prediction has no 'labels_trunc' map"):
        seg.update({"labels": ok["labels"]}, gt)
    with pytest.raises(ValueError, match=r"'labels_trunc' \(1, 2\) and label \(2, 2\) differ"):
        seg.update({**ok, "labels_trunc": np.zeros((1, 2), np.uint8)}, gt)
    iou = IouEvalMetric("guide", "", CLASSES, n_outputs=20, ignore=19)
    with pytest.raises(ValueError, match=r"prediction values must be in \[0, 20\)"):
        iou.update({"labels": np.full((2, 2), 20, np.uint8)}, gt)
    with pytest.raises(ValueError, match="expected an integer label map, got float32"):
        iou.update({"labels": np.zeros((2, 2), np.float32)}, gt)
    assert seg.n == iou.n == 0 and seg.cm.mat.sum() == iou.cm.mat.sum() == 0   # nothing counted


@pytest.mark.parametrize("trunc", [False, True])
def test_class_argmax_equals_numpy_argmax_with_ties_and_nan(trunc):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((19, 40, 60)).astype(np.float32) * 3
    x[:, :5, :5] = 1.0                       # an exact tie of every class: index 0
    x[4:9, 10:12, :] = 7.5                   # ties among some classes, and truncation ties (7.5 -> 7)
    x[6, 10:12, :] = 7.9
    x[:, 20, 20] = np.nan                    # all NaN
    x[3, 21, 21] = np.nan                    # one NaN: numpy picks it
    ref = (np.trunc(x) if trunc else x).argmax(0)
    np.testing.assert_array_equal(class_argmax(x, trunc=trunc), ref)
    clean = rng.standard_normal((5, 30, 30)).astype(np.float32) * 2
    np.testing.assert_array_equal(class_argmax(clean, trunc=trunc), (np.trunc(clean) if trunc else clean).argmax(0))
    ints = rng.integers(-3, 3, (6, 20, 20)).astype(np.float32)   # many ties everywhere
    np.testing.assert_array_equal(class_argmax(ints, trunc=trunc), ints.argmax(0))


def _pair_ref(x):
    return x.argmax(0), np.trunc(x).argmax(0)


@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0, 100.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_class_argmax_pair_equals_both_numpy_argmaxes(scale, dtype):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((19, 48, 64)) * scale).astype(dtype)
    # the truncation boundaries, from both sides: maxima exactly on integers, just below and above
    # them, on both signs, with other classes truncating to the same integer (ties after trunc)
    x[:, 0, :] = -0.5
    x[2, 0, :8] = 0.99
    x[:, 1, :] = -3.0
    x[5, 1, :8] = -2.0
    x[7, 1, 8:16] = np.nextafter(dtype(-2.0), dtype(-np.inf))
    x[:, 2, :] = np.nextafter(dtype(1.0), dtype(-np.inf))
    x[9, 2, :8] = 1.0
    x[10, 2, 8:16] = 1.5
    x[:, 3, :] = 4.0
    x[:, 4, :4] = -7.9
    x[12, 4, :4] = -7.1
    ints = rng.integers(-3, 3, (19, 5, 64)).astype(dtype)
    x[:, 5:10, :] = ints                                   # exact ties everywhere
    got = class_argmax_pair(x)
    ref = _pair_ref(x)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


def test_class_argmax_pair_falls_back_exactly_on_nan_inf_huge_and_ints():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 8, 8)).astype(np.float32) * 3
    for edit in ("nan", "inf", "-inf", "huge"):
        y = x.copy()
        if edit == "nan":
            y[2, 1, 1] = np.nan
        elif edit == "inf":
            y[3, 2, 2] = np.inf
        elif edit == "-inf":
            y[:, 3, 3] = -np.inf
        else:
            y[:, 4, 4] = np.float32(2.0 ** 25)              # T - 1 is not a float32 here
            y[1, 4, 4] = np.float32(2.0 ** 25 + 2)
        got, ref = class_argmax_pair(y), _pair_ref(y)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])
    i = rng.integers(-5, 5, (4, 6, 6))
    got = class_argmax_pair(i)
    np.testing.assert_array_equal(got[0], i.argmax(0))
    np.testing.assert_array_equal(got[1], i.argmax(0))


@pytest.mark.parametrize("n_gt,n_pred", [(19, 19), (19, 20), (3, 4)])
def test_confusion_matrix_fast_path_equals_bincount(n_gt, n_pred):
    rng = np.random.default_rng(11)
    gt = rng.integers(0, n_gt, (96, 130)).astype(np.uint8)
    gt[:7] = 255                              # ignored
    gt[7:9] = n_gt                            # >= n_gt: ignored too
    pred = rng.integers(0, n_pred, gt.shape).astype(np.int64)
    valid = gt < n_gt
    ref = np.bincount(gt[valid].astype(np.int64) * n_pred + pred[valid],
                      minlength=n_gt * n_pred).reshape(n_gt, n_pred)
    cm = ConfusionMatrix(n_gt, n_pred)
    assert cm._update_uint8(pred, gt) is not None          # the fast path is taken
    np.testing.assert_array_equal(cm.update(pred, gt), ref)
    np.testing.assert_array_equal(cm.update(pred.astype(np.uint8), gt), ref)
    np.testing.assert_array_equal(cm.mat, 2 * ref)
    # a label map that is not uint8 takes the general path, same matrix
    np.testing.assert_array_equal(ConfusionMatrix(n_gt, n_pred).update(pred, gt.astype(np.int32)), ref)


def test_confusion_matrix_out_of_range_prediction_on_an_ignored_pixel_is_not_an_error():
    gt = np.array([[0, 255], [1, 1]], np.uint8)
    pred = np.array([[0, 99], [1, 0]], np.int64)          # 99 only where the label is ignored
    m = ConfusionMatrix(2).update(pred, gt)
    np.testing.assert_array_equal(m, [[1, 0], [1, 1]])
    with pytest.raises(ValueError, match="prediction values must be in"):
        ConfusionMatrix(2).update(np.array([[0, 0], [5, 0]]), gt)
