"""Metrics shared by models. Each accumulates compact statistics as batches stream through."""
from __future__ import annotations

import numpy as np

from zoo.adapter import Metric

SMOOTH = 1e-5


class BinaryIoU(Metric):
    """IoU of a one-channel prediction against a mask, with the two aggregations in use:

    - aggregate="image": IoU per image, plain mean over images;
    - aggregate="batch": IoU over each consecutive group of `group` samples in dataset order
      (pixels pooled across the group), mean weighted by group size (upstream's AverageMeter).

    The prediction is positive where `sigmoid(logit) > threshold` if `apply_sigmoid`, else where
    `logit > threshold` (the guide feeds raw logits to a threshold of 0.5). The target is positive
    where target > target_threshold. IoU = (|P & T| + 1e-5) / (|P | T| + 1e-5)."""

    metric = "iou"

    def __init__(self, name: str, description: str, threshold: float = 0.5, apply_sigmoid: bool = False,
                 aggregate: str = "image", group: int = 16, target_threshold: float = 0.5):
        if aggregate not in ("image", "batch"):
            raise ValueError(aggregate)
        self.name, self.description = name, description
        self.threshold, self.apply_sigmoid = threshold, apply_sigmoid
        self.aggregate, self.group, self.target_threshold = aggregate, group, target_threshold
        self.inter: list[int] = []
        self.union: list[int] = []

    def predict(self, outputs: np.ndarray) -> np.ndarray:
        if self.apply_sigmoid:
            # sigmoid(x) > t  <=>  x > logit(t); computed as upstream does, in float32
            probs = 1.0 / (1.0 + np.exp(-outputs.astype(np.float32)))
            return probs > self.threshold
        return outputs > self.threshold

    def update(self, outputs: np.ndarray, targets: list) -> None:
        pred = self.predict(outputs)
        for p, t in zip(pred, targets):
            t = np.asarray(t) > self.target_threshold
            p = p.reshape(t.shape)
            self.inter.append(int(np.logical_and(p, t).sum()))
            self.union.append(int(np.logical_or(p, t).sum()))

    def compute(self) -> dict:
        inter = np.asarray(self.inter, dtype=np.float64)
        union = np.asarray(self.union, dtype=np.float64)
        n = inter.size
        if n == 0:
            return {"iou": float("nan"), "num_samples": 0}
        if self.aggregate == "image":
            iou = float(np.mean((inter + SMOOTH) / (union + SMOOTH)))
        else:
            starts = range(0, n, self.group)
            vals = [(inter[s:s + self.group].sum() + SMOOTH) / (union[s:s + self.group].sum() + SMOOTH) for s in starts]
            sizes = [min(self.group, n - s) for s in starts]
            iou = float(np.average(vals, weights=sizes))
        return {"iou": iou, "num_samples": n}
