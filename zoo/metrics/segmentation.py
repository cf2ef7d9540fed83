"""Segmentation metrics over label maps (confusion matrices: memory O(classes^2), whatever the number
of images): erfnet iouEval, SegmenTron SegmentationMetric (and the Ascend guide's running average of
it), mmseg IoUMetric. Each is fed one sample's prediction (a dict of HxW integer label maps: the
argmax is the adapter's postprocess, `class_argmax` / `class_argmax_pair` here) and its label map."""
from __future__ import annotations

import cv2
import numpy as np

from zoo.metrics import Metric


class ConfusionMatrix:
    """Streaming confusion matrix (rows = ground truth, columns = prediction) over the pixels
    whose ground truth is < n_gt; memory is O(classes^2), whatever the number of images."""

    def __init__(self, n_gt: int, n_pred: int | None = None):
        self.n_gt, self.n_pred = n_gt, n_pred or n_gt
        self.mat = np.zeros((self.n_gt, self.n_pred), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """Add one image; returns that image's own matrix."""
        m = self.count(pred, gt)
        self.mat += m
        return m

    def count(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """One image's own (n_gt, n_pred) int64 matrix, not added (the state is not touched)."""
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred.shape} and label {gt.shape} differ in shape")
        m = self._update_uint8(pred, gt)
        if m is not None:
            return m
        valid = (gt >= 0) & (gt < self.n_gt)
        p = pred[valid].astype(np.int64)
        if p.size and (p.min() < 0 or p.max() >= self.n_pred):
            raise ValueError(f"prediction values must be in [0, {self.n_pred}), got {p.min()}..{p.max()}")
        idx = gt[valid].astype(np.int64) * self.n_pred + p
        return np.bincount(idx, minlength=self.n_gt * self.n_pred).reshape(self.n_gt, self.n_pred)

    def _update_uint8(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray | None:
        """The same matrix for the common case (uint8 labels, integer predictions all in range,
        fewer than 2^24 pixels) through OpenCV's histogram of gt * n_pred + pred in uint16: ~6x
        faster than boolean indexing + bincount on a 2048x1024 map. Labels >= n_gt land outside
        the histogram's range and are not counted, as in the general path. None: not this case."""
        if gt.dtype != np.uint8 or pred.dtype.kind not in "iu" or self.n_pred > 256 or pred.size >= 1 << 24:
            return None
        if pred.size == 0 or int(pred.min()) < 0 or int(pred.max()) >= self.n_pred:
            return None  # the general path checks (only the pixels it counts) and says what is wrong
        idx = gt.astype(np.uint16)
        idx *= self.n_pred
        idx += pred.astype(np.uint16)
        bins = self.n_gt * self.n_pred
        hist = cv2.calcHist([idx.reshape(-1, 1)], [0], None, [bins], [0, bins]).ravel()
        return hist.astype(np.int64).reshape(self.n_gt, self.n_pred)


def class_argmax(logits: np.ndarray, trunc: bool = False) -> np.ndarray:
    """argmax over the class axis of one (C, H, W) map, equal to `np.argmax(logits, 0)` (or of
    `np.trunc(logits)`): first index on ties, first NaN wins. About 3x faster on large maps
    (numpy's axis-0 argmax copies the map to make the class axis contiguous): the max over the
    classes, then the first class that equals it. trunc is monotone, so max(trunc) = trunc(max)."""
    logits = np.asarray(logits)
    top = logits.max(0)
    if np.isnan(top).any():                     # NaN: numpy's rule (the first NaN) exactly
        return (np.trunc(logits) if trunc else logits).argmax(0)
    if trunc:
        top = np.trunc(top)
    idx = np.full(top.shape, logits.shape[0] - 1, dtype=np.int64)
    for c in range(logits.shape[0] - 2, -1, -1):  # downwards: the lowest equal index is written last
        plane = np.trunc(logits[c]) if trunc else logits[c]
        np.copyto(idx, c, where=plane == top)
    return idx


def class_argmax_pair(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(`np.argmax(logits, 0)`, `np.argmax(np.trunc(logits), 0)`) of one (C, H, W) map, sharing
    one max and one loop (SegmenTron's metric needs both). For v <= top (the per-pixel max), with
    T = trunc(top): trunc(v) == T  <=>  v >= T when T >= 1, v > T - 1 when T <= 0 (trunc is
    monotone and rounds towards zero), i.e. v > thr with thr = the float just below T, or T - 1:
    one comparison per class instead of a truncated copy. Non-finite maxima, non-float maps and
    magnitudes where T - 1 is not exact take `class_argmax` twice (same results)."""
    logits = np.asarray(logits)
    if logits.dtype.kind != "f":
        return class_argmax(logits), class_argmax(logits, trunc=True)
    top = logits.max(0)
    if not np.isfinite(top).all() or float(np.abs(top).max(initial=0)) >= 2.0 ** np.finfo(logits.dtype).nmant:
        return class_argmax(logits), class_argmax(logits, trunc=True)
    t = np.trunc(top)
    one = logits.dtype.type(1)
    thr = np.where(t >= one, np.nextafter(t, logits.dtype.type(-np.inf)), t - one)
    c_last = logits.shape[0] - 1
    idx = np.full(top.shape, c_last, dtype=np.int64)
    idx_t = np.full(top.shape, c_last, dtype=np.int64)
    hit = np.empty(top.shape, dtype=bool)
    for c in range(c_last - 1, -1, -1):  # downwards: the lowest matching index is written last
        np.equal(logits[c], top, out=hit)
        np.copyto(idx, c, where=hit)
        np.greater(logits[c], thr, out=hit)
        np.copyto(idx_t, c, where=hit)
    return idx, idx_t


def _labels(prediction, key: str) -> np.ndarray:
    """One label map of a prediction (an integer HxW array)."""
    try:
        labels = np.asarray(prediction[key])
    except KeyError:
        raise ValueError(f"prediction has no {key!r} map (has: {', '.join(sorted(prediction))})") from None
    if labels.dtype.kind not in "iu":
        raise ValueError(f"prediction {key!r}: expected an integer label map, got {labels.dtype}")
    return labels


class IouEvalMetric(Metric):
    """erfnet_pytorch `iouEval(nClasses, ignoreIndex)` over the dataset: per class c < ignore,
    TP = pred c & gt c; FP = pred c & gt not c & gt != ignore; FN = gt c & pred not c (a pixel
    predicted as the ignore class counts as FN); IoU_c = TP / (TP + FP + FN + 1e-15); mean over
    the classes 0..ignore-1 with no NaN handling. Fed prediction["labels"] (the argmax over the
    n_outputs classes) and the target label map, which uses `ignore` for void (255 is ignored too)."""

    metric = "miou"

    def __init__(self, name: str, description: str, classes: tuple[str, ...], n_outputs: int, ignore: int):
        self.name, self.description, self.classes = name, description, classes
        self.ignore = ignore
        self.cm = ConfusionMatrix(n_gt=ignore, n_pred=n_outputs)  # gt == ignore (or 255) excluded
        self.n = 0

    def contribution(self, prediction, target) -> np.ndarray:
        """The image's confusion matrix (ignore x n_outputs, int64)."""
        return self.cm.count(_labels(prediction, "labels"), np.asarray(target))

    def add(self, contribution: np.ndarray) -> None:
        self.cm.mat += contribution
        self.n += 1

    def _iou(self) -> np.ndarray:
        m = self.cm.mat  # rows: gt 0..ignore-1 ; cols: pred 0..n_outputs-1
        k = self.ignore
        tp = np.diag(m[:, :k]).astype(np.float64)
        fp = m[:, :k].sum(0) - tp
        fn = m.sum(1) - tp
        return tp / (tp + fp + fn + 1e-15)

    def compute(self) -> dict:
        iou = self._iou()
        return {"miou": float(iou.mean()), "num_samples": self.n}

    def per_class(self) -> list[dict]:
        return [{"class": c, "iou": float(v)} for c, v in zip(self.classes, self._iou())]


class SegmentronMetric(Metric):
    """SegmenTron `SegmentationMetric(nclass)` over the dataset, including its quirks:

    - mIoU: per class intersection / union (prediction counted only on labelled pixels),
      IoU = inter / (2.22e-16 + union), plain mean over all classes (absent classes give 0);
    - pixAcc = correct / (2.22e-16 + labelled), where `correct` compares the target with
      argmax(trunc(logits)) (upstream calls `torch.argmax(output.long(), 1)`; ties -> first);
      `pix_acc_true` gives the same with the plain argmax;
    - the Ascend postprocess's reported figures "AvgmIou"/"AvgpixAcc": the mean over images of the
      *running* dataset-level values after each image (order dependent) -> `running_avg_*`.
    Fed prediction["labels"] (argmax of the logits) and prediction["labels_trunc"] (argmax of
    their truncation: class_argmax_pair makes both); targets are trainIds, 255 unlabelled."""

    metric = "miou"
    EPS = 2.220446049250313e-16

    def __init__(self, name: str, description: str, classes: tuple[str, ...]):
        self.name, self.description, self.classes = name, description, classes
        self.cm = ConfusionMatrix(len(classes))
        self.correct_trunc = 0
        self.sum_running_miou = 0.0
        self.sum_running_pixacc = 0.0
        self.n = 0

    def _iou(self) -> np.ndarray:
        m = self.cm.mat.astype(np.float64)
        inter = np.diag(m)
        union = m.sum(0) + m.sum(1) - inter
        return inter / (self.EPS + union)

    def contribution(self, prediction, target) -> tuple[np.ndarray, int]:
        """(the image's confusion matrix, its pixels where the truncating argmax is right). The
        running averages are not the image's own: `add` recomputes them from the state."""
        gt = np.asarray(target)
        pred, pred_t = _labels(prediction, "labels"), _labels(prediction, "labels_trunc")
        if pred_t.shape != gt.shape:
            raise ValueError(f"prediction 'labels_trunc' {pred_t.shape} and label {gt.shape} differ in shape")
        m = self.cm.count(pred, gt)
        labelled = (gt >= 0) & (gt < len(self.classes))
        return m, int(((pred_t == gt) & labelled).sum())

    def add(self, contribution: tuple[np.ndarray, int]) -> None:
        m, correct_trunc = contribution
        self.cm.mat += m
        self.correct_trunc += correct_trunc
        self.n += 1
        self.sum_running_miou += float(self._iou().mean())
        self.sum_running_pixacc += self._pixacc()

    def _pixacc(self) -> float:
        return self.correct_trunc / (self.EPS + self.cm.mat.sum())

    def compute(self) -> dict:
        labelled = self.cm.mat.sum()
        n = max(self.n, 1)
        return {"miou": float(self._iou().mean()), "pix_acc": float(self._pixacc()),
                "pix_acc_true": float(np.trace(self.cm.mat) / (self.EPS + labelled)),
                "running_avg_miou": self.sum_running_miou / n, "running_avg_pix_acc": self.sum_running_pixacc / n,
                "num_samples": self.n}

    def per_class(self) -> list[dict]:
        return [{"class": c, "iou": float(v)} for c, v in zip(self.classes, self._iou())]


class RunningAverageMetric(SegmentronMetric):
    """The Ascend guide's reported figures (Fast_SCNN_postprocess.py): after each image, the
    running dataset-level mIoU / pixAcc are added up; it prints sum / 5, i.e. 100 x the mean over
    its 500 images ("AvgmIou", "AvgpixAcc").
    Headline: `running_avg_miou`. The guide redefines `batch_pix_accuracy` with a plain argmax
    (no `.long()` truncation), so its AvgpixAcc is `running_avg_pix_acc_true` here
    (`running_avg_pix_acc` is the same average of upstream's truncating pixAcc).

    The value depends on the order of the images: it is comparable with the guide's figure only in
    the guide's order (`comparable` says whether this run used it)."""

    metric = "running_avg_miou"

    def __init__(self, name: str, description: str, classes: tuple[str, ...], comparable: bool | None = None,
                 not_comparable_reason: str | None = None):
        super().__init__(name, description, classes)
        self.comparable, self.not_comparable_reason = comparable, not_comparable_reason
        self.sum_running_pixacc_true = 0.0

    def add(self, contribution: tuple[np.ndarray, int]) -> None:
        super().add(contribution)
        mat = self.cm.mat
        self.sum_running_pixacc_true += float(np.trace(mat) / (self.EPS + mat.sum()))

    def compute(self) -> dict:
        out = super().compute()
        out["running_avg_pix_acc_true"] = self.sum_running_pixacc_true / max(self.n, 1)
        return out


class DatasetIoU(Metric):
    """mmsegmentation's IoUMetric (`intersect_and_union` summed over the dataset, then
    `total_area_to_metrics`): per class IoU = intersect / union and Acc = intersect / label area,
    NaN for a class absent from both prediction and labels (IoU) or from the labels (Acc);
    mIoU and mAcc are nan-means, aAcc = all intersections / all labelled pixels. Pixels whose
    label is `ignore_index` (or any value >= the class count) are left out.

    Fed prediction["labels"] (a label map at the label's size: the protocol's cropping and
    resizing are the adapter's postprocess) and the label map."""

    metric = "miou"

    def __init__(self, name: str, description: str, classes: tuple[str, ...]):
        self.name, self.description, self.classes = name, description, tuple(classes)
        self.cm = ConfusionMatrix(len(self.classes))
        self.n = 0

    def contribution(self, prediction, target) -> np.ndarray:
        """The image's confusion matrix (classes x classes, int64)."""
        return self.cm.count(_labels(prediction, "labels"), np.asarray(target))

    def add(self, contribution: np.ndarray) -> None:
        self.cm.mat += contribution
        self.n += 1

    def areas(self) -> dict:
        """Dataset totals per class, as mmseg's `total_area_*`."""
        m = self.cm.mat.astype(np.float64)
        inter = np.diag(m)
        label, pred = m.sum(1), m.sum(0)
        return {"intersect": inter, "union": label + pred - inter, "pred_label": pred, "label": label}

    def _per_class(self) -> tuple[np.ndarray, np.ndarray]:
        a = self.areas()
        with np.errstate(divide="ignore", invalid="ignore"):
            return a["intersect"] / a["union"], a["intersect"] / a["label"]

    def compute(self) -> dict:
        iou, acc = self._per_class()
        a = self.areas()
        total = a["label"].sum()
        with np.errstate(invalid="ignore"):
            return {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
                    "macc": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
                    "aacc": float(a["intersect"].sum() / total) if total else float("nan"),
                    "num_samples": self.n}

    def per_class(self) -> list[dict]:
        iou, acc = self._per_class()
        return [{"class": c, "iou": None if np.isnan(i) else float(i), "acc": None if np.isnan(a) else float(a)}
                for c, i, a in zip(self.classes, iou, acc)]
