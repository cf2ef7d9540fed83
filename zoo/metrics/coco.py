"""COCO box AP over detections (zoo.predictions.Detections: COCO results rows, category ids
already mapped): pycocotools COCOeval(iouType='bbox') as the guide's coco_eval.py runs it, with
mmdet CocoMetric's maxDets (100/300/1000) and its names for the 12 stats, plus the per-class AP
table. The figures are computed from exactly the rows fed, so a saved `detections.json` re-scores
to the same numbers.

Optionally the metric also writes the rows it was fed as a COCO results JSON (at `compute`) and
draws each image's detections (at `contribution`, i.e. in the process that postprocessed the
image): the guide's `results_json` / `visualize` outputs."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from zoo.datasets.coco import CAT_IDS, CLASSES
from zoo.errors import ZooError, one_line
from zoo.fileutil import atomic_write_bytes, atomic_write_text
from zoo.ids import shown
from zoo.images import imread
from zoo.metrics import Metric
from zoo.predictions import Detections

# mmdet CocoMetric: proposal_nums (100, 300, 1000) as maxDets, and its names of COCOeval.stats
MAX_DETS = [100, 300, 1000]
STAT_NAMES = ("map", "map_50", "map_75", "map_s", "map_m", "map_l",
              "ar_100", "ar_300", "ar_1000", "ar_s_1000", "ar_m_1000", "ar_l_1000")


def evaluate(coco, results: list[dict], image_ids: list[int]) -> dict:
    """COCOeval(iouType='bbox') over image_ids with the 80 categories and maxDets 100/300/1000;
    returns the 12 stats by name (NaN-free: pycocotools' -1 'no data' stays -1)."""
    from pycocotools.cocoeval import COCOeval
    if not results:  # no detection at all: every figure 0, no class has an AP
        return {**{name: 0.0 for name in STAT_NAMES}, "summary": "no detections", "per_class": []}
    with contextlib.redirect_stdout(io.StringIO()) as log:
        dt = coco.loadRes([dict(r) for r in results])  # copies: loadRes adds area/id/segmentation in place
        ev = COCOeval(coco, dt, "bbox")
        ev.params.catIds = list(CAT_IDS)
        ev.params.imgIds = list(image_ids)
        ev.params.maxDets = list(MAX_DETS)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}
    stats["summary"] = log.getvalue()
    # per class AP@[.5:.95] (mmdet's classwise table): precision[T, R, K, A=all, M=last]
    prec = ev.eval["precision"][:, :, :, 0, -1]
    per_class = []
    for k, name in enumerate(CLASSES):
        p = prec[:, :, k]
        p = p[p > -1]
        per_class.append({"class": name, "ap": float(p.mean()) if p.size else None})
    stats["per_class"] = per_class
    return stats


def write_results(path: Path, results: list[dict]) -> None:
    """The COCO results JSON, written atomically; a failed write is a one-line ZooError."""
    try:
        atomic_write_text(Path(path), json.dumps(results, allow_nan=False))
    except OSError as exc:
        raise ZooError(f"{shown(path)}: cannot write the COCO results ({exc.strerror or one_line(exc)})") from None


def draw(src: Path, dst: Path, rows: list[dict], min_score: float = 0.3) -> None:
    """The guide's optional visualisation: one image's boxes with class and score drawn on it."""
    img = imread(src, cv2.IMREAD_COLOR)
    for r in rows:
        if r["score"] < min_score:
            continue
        x, y, w, h = r["bbox"]
        label = CAT_IDS.index(r["category_id"])
        color = tuple(int(c) for c in np.random.default_rng(label).integers(64, 256, 3))
        cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), color, 2)
        cv2.putText(img, f"{CLASSES[label]} {r['score']:.2f}", (int(x), max(int(y) - 4, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", img)
    if not ok:
        raise ZooError(f"{shown(dst)}: cannot encode the drawing")
    try:
        atomic_write_bytes(dst, buf.tobytes())
    except OSError as exc:
        raise ZooError(f"{shown(dst)}: cannot write the drawing ({exc.strerror or exc})") from None


class CocoBoxAP(Metric):
    """COCO box AP (AP@[.5:.95] headline, the 12 stats, per-class AP) of the Detections fed, over
    the images fed. The target of a sample is its image id. `coco` is the source's pycocotools
    index (zoo.datasets.coco.CocoDetection.coco). Optional outputs: `results_json` (a file: the
    rows fed, written at compute) and `visualize` (a folder: one drawing per image, made at
    `contribution` from the image `image_path(image_id)` names)."""

    metric = "map"

    def __init__(self, name: str, description: str, coco, results_json: str = "", visualize: str = "",
                 image_path: Callable[[int], Path] | None = None):
        if visualize and image_path is None:
            raise ValueError("visualize needs image_path")
        self.name, self.description, self.coco = name, description, coco
        self.results_json, self.visualize, self.image_path = results_json, visualize, image_path
        self.results: list[dict] = []
        self.image_ids: list[int] = []
        self._stats = None

    def contribution(self, prediction: Detections, target: int) -> tuple[int, list[dict]]:
        """(the image id, its results rows); the drawing (`visualize`) is made here, where the
        image is (a shard's worker)."""
        if not isinstance(prediction, Detections):
            raise TypeError(f"metric {self.name}: expected Detections, got {type(prediction).__name__}")
        if prediction.image_id != target:
            raise ValueError(f"metric {self.name}: detections of image {prediction.image_id} given for image {target}")
        if self.visualize:
            draw(self.image_path(target), Path(self.visualize) / f"{target:012d}.jpg", prediction.rows)
        return int(target), prediction.rows

    def add(self, contribution: tuple[int, list[dict]]) -> None:
        image_id, rows = contribution
        self.results += rows
        self.image_ids.append(image_id)
        self._stats = None

    def stats(self) -> dict:
        if self._stats is None:
            self._stats = evaluate(self.coco, self.results, self.image_ids)
            if self.results_json:
                write_results(Path(self.results_json), self.results)
        return self._stats

    def compute(self) -> dict:
        out = {k: v for k, v in self.stats().items() if k not in ("summary", "per_class")}
        out["num_samples"] = len(self.image_ids)
        out["num_detections"] = len(self.results)
        return out

    def per_class(self) -> list[dict]:
        return self.stats()["per_class"]
