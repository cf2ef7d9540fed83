"""Binary segmentation metrics over masks."""
from __future__ import annotations

import numpy as np

from zoo.metrics import Metric

SMOOTH = 1e-5


class BinaryIoU(Metric):
    """IoU of a predicted mask against a target mask, with the two aggregations in use:

    - aggregate="image": IoU per image, plain mean over images;
    - aggregate="batch": IoU over each consecutive group of `group` samples in id order (pixels
      pooled across the group), mean weighted by group size (upstream's AverageMeter over its
      loader's batches).

    Fed `prediction[key]` (a bool mask: each protocol thresholds the logits its own way) and a
    bool target of the same number of pixels. IoU = (|P & T| + 1e-5) / (|P | T| + 1e-5)."""

    metric = "iou"

    def __init__(self, name: str, description: str, key: str, aggregate: str = "image", group: int = 16):
        if aggregate not in ("image", "batch"):
            raise ValueError(aggregate)
        self.name, self.description, self.key = name, description, key
        self.aggregate, self.group = aggregate, group
        self.inter: list[int] = []
        self.union: list[int] = []

    def contribution(self, prediction, target) -> tuple[int, int]:
        """(|P & T|, |P | T|) of one sample. Batch groups are formed at `compute` from the
        samples' positions, so they are the same whichever process counted each sample."""
        t = np.asarray(target, dtype=bool)
        p = np.asarray(prediction[self.key], dtype=bool).reshape(t.shape)
        return int(np.count_nonzero(p & t)), int(np.count_nonzero(p | t))

    def add(self, contribution: tuple[int, int]) -> None:
        inter, union = contribution
        self.inter.append(inter)
        self.union.append(union)

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
