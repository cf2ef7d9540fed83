"""Metrics, one module per task family, fed *predictions* (what an adapter's `postprocess` makes
of one sample's outputs), never raw outputs:

  binary        BinaryIoU: masks (UNet++)
  segmentation  confusion-matrix metrics over label maps (ErfNet iouEval, SegmenTron, mmseg IoUMetric)
  coco          COCO box AP (pycocotools) over detections

A metric sees the samples one at a time, in the source's id order (some figures depend on it:
batch groups, running averages), so the same predictions give the same figures whether they come
from a live run or from a saved run being re-scored (`invoke score`)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Metric(ABC):
    name: str           # protocol id, e.g. "guide" (matches manifest reference.protocols)
    metric: str         # headline figure, e.g. "iou"
    description: str = ""
    comparable: bool | None = None  # False: the value's protocol differs from the reference's
    not_comparable_reason: str | None = None

    @abstractmethod
    def update(self, prediction: Any, target: Any) -> None:
        """One sample: its prediction (adapter.postprocess) and its target (adapter.target)."""

    @abstractmethod
    def compute(self) -> dict:
        """All figures; must contain self.metric and num_samples."""

    def per_class(self) -> list[dict] | None:
        """Per-class figures ([{"class": name, "iou": ...}, ...]) where the metric has classes."""
        return None
