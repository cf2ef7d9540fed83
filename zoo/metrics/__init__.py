"""Metrics, one module per task family, fed *predictions* (what an adapter's `postprocess` makes
of one sample's outputs), never raw outputs:

  binary        BinaryIoU: masks (UNet++)
  segmentation  confusion-matrix metrics over label maps (ErfNet iouEval, SegmenTron, mmseg IoUMetric)
  coco          COCO box AP (pycocotools) over detections

A metric sees the samples one at a time, in the source's id order (some figures depend on it:
batch groups, running averages), so the same predictions give the same figures whether they come
from a live run or from a saved run being re-scored (`invoke score`).

A metric's work is split in two so that a run sharded over processes (Ray workers, each
postprocessing a contiguous run of ids) gives the single-process figures to the last digit:
`contribution(prediction, target)` does one sample's expensive part (a confusion matrix, pixel
counts, detection rows) and touches no state; `add(contribution)` folds it into the state, cheaply
and in order. `update` is `add(contribution(...))`, so a driver that replays the shards'
contributions in id order (`replay`) performs the same arithmetic in the same order as one
process: order-dependent figures (running averages, batch groups) come out identical. A worker
feeds `Collector`s to the pipeline instead of metrics and ships their `contributions` (compact,
picklable: small integer arrays, ints, result rows) to the driver."""
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
    def contribution(self, prediction: Any, target: Any) -> Any:
        """One sample's share of the state: its prediction (adapter.postprocess) and its target
        (adapter.target) reduced to what `add` needs. Reads only the metric's settings, never its
        state; the result is compact, picklable and holds no reference to the metric."""

    @abstractmethod
    def add(self, contribution: Any) -> None:
        """Fold one sample's contribution into the state (samples in id order)."""

    def update(self, prediction: Any, target: Any) -> None:
        """One sample: its prediction (adapter.postprocess) and its target (adapter.target)."""
        self.add(self.contribution(prediction, target))

    @abstractmethod
    def compute(self) -> dict:
        """All figures; must contain self.metric and num_samples."""

    def per_class(self) -> list[dict] | None:
        """Per-class figures ([{"class": name, "iou": ...}, ...]) where the metric has classes."""
        return None


class Collector:
    """Stands in for a metric in a worker's pipeline: `update` keeps the sample's contribution
    (`contributions`, in the order fed) instead of folding it in. `name` and `metric` are the
    wrapped metric's (protocol id, headline figure); the metric itself is `wrapped`."""

    def __init__(self, metric: Metric):
        self.wrapped = metric
        self.name, self.metric = metric.name, metric.metric
        self.contributions: list = []

    def update(self, prediction: Any, target: Any) -> None:
        self.contributions.append(self.wrapped.contribution(prediction, target))

    def drain(self) -> list:
        """The contributions collected so far, which are forgotten here (to ship them in chunks)."""
        out, self.contributions = self.contributions, []
        return out


def replay(metric: Metric, contributions) -> Metric:
    """Fold contributions into `metric` in the order given (the samples' id order: shards in
    order, each shard's own in order); returns the metric."""
    for c in contributions:
        metric.add(c)
    return metric
