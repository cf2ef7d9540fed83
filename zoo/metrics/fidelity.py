"""Fidelity to fp32: how closely a reduced-precision run's predictions follow the same model's fp32
predictions, with the fp32 predictions as the ground truth.

A reduced-precision run is judged by its accuracy drop against fp32 (the guides' 1% rule). That
needs a trained checkpoint: with random weights (benchmarks/random_weights.py, the checkpoints the
zoo runs where an official file cannot be had) the accuracy figures mean nothing, but whether the
cheaper arithmetic changes the model's decisions still does. So the same kind of metric the task
uses is computed against the fp32 predictions instead of the labels:

  binary maps (bool masks)   fidelity_iou:  mean per-image IoU of the candidate's foreground
                             against fp32's (both empty: 1.0);
  label maps (integers)      fidelity_miou: mIoU of a confusion matrix accumulated over the
                             dataset (rows fp32, columns candidate), over the classes present in
                             either; fp32 pixels equal to `ignore` (255) are left out;
  Detections                 fidelity_ap:   COCO box AP@[.5:.95] (and AP50) with every fp32
                             detection a ground-truth box (iscrowd 0, area w*h, its category) and
                             the candidate's detections the results (pycocotools; categories with
                             no fp32 box have no AP, as in COCO).

Fed one sample at a time in id order (the candidate's prediction, then fp32's): memory is the
confusion matrices and per-image counts for maps, the detection rows for detections. The walk
over the predictions' keys and its checks are the one comparator's (zoo.comparator.DecisionDiff,
strict: keys, kinds and map shapes must agree); these agreements are its measures."""
from __future__ import annotations

import contextlib
import io

import numpy as np

from zoo.comparator import DecisionDiff
from zoo.errors import ZooError
from zoo.metrics.segmentation import ConfusionMatrix
from zoo.predictions import Detections

IGNORE = 255
DESCRIPTIONS = {
    "fidelity_iou": "mean per-image IoU of the candidate's mask against the fp32 run's mask (fp32 as ground truth)",
    "fidelity_miou": "mIoU of the candidate's label map against the fp32 run's (fp32 as ground truth), over the "
                     "dataset's confusion matrix and the classes present in either",
    "fidelity_ap": "COCO box AP@[.5:.95] of the candidate's detections with the fp32 run's detections as ground truth",
}


class _BinaryAgreement:
    """Per-image IoU of two masks (1.0 when both are empty; the candidate's map read as a mask)."""
    metric = "fidelity_iou"

    def __init__(self):
        self.ious: list[float] = []

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        cand = cand.astype(bool, copy=False)
        union = np.count_nonzero(cand | ref)
        self.ious.append(1.0 if union == 0 else np.count_nonzero(cand & ref) / union)

    def figures(self) -> dict:
        return {"value": float(np.mean(self.ious)) if self.ious else float("nan"),
                "min_image": float(min(self.ious)) if self.ious else None}


class _LabelAgreement:
    """A dataset confusion matrix of label maps (values 0..255; fp32's `ignore` pixels left out)."""
    metric = "fidelity_miou"

    def __init__(self, ignore: int = IGNORE):
        self.ignore = ignore
        self.cm = ConfusionMatrix(ignore, 256)  # rows (fp32) below `ignore`; columns any uint8 value

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        for a in (cand, ref):
            if a.size and (int(a.min()) < 0 or int(a.max()) > 255):
                raise ZooError(f"fidelity: label maps must hold classes 0..255, got {int(a.min())}..{int(a.max())}")
        self.cm.update(cand.astype(np.uint8, copy=False), ref.astype(np.uint8, copy=False))

    def figures(self) -> dict:
        m = np.zeros((256, 256), dtype=np.int64)
        m[:self.ignore] = self.cm.mat
        inter = np.diag(m).astype(np.float64)
        ref_px, cand_px = m.sum(1), m.sum(0)
        present = (ref_px + cand_px) > 0
        iou = inter[present] / (ref_px + cand_px - inter)[present]
        return {"value": float(iou.mean()) if iou.size else 1.0, "classes": int(present.sum()),
                "pixel_agreement": float(inter.sum() / ref_px.sum()) if ref_px.sum() else None}


class _DetectionAgreement:
    """COCO AP of the candidate's rows against fp32's rows as ground truth."""
    metric = "fidelity_ap"

    def __init__(self):
        self.gt: list[dict] = []
        self.dt: list[dict] = []
        self.image_ids: list[int] = []

    def update(self, ref: Detections, cand: Detections) -> None:
        if cand.image_id != ref.image_id:
            raise ValueError(f"fidelity: detections of image {cand.image_id} compared with image {ref.image_id}")
        self.image_ids.append(int(ref.image_id))
        self.gt += ref.rows
        self.dt += cand.rows

    def figures(self) -> dict:
        counts = {"fp32_detections": len(self.gt), "detections": len(self.dt)}
        if not self.gt:  # nothing to find: perfect only when nothing was found either
            v = 1.0 if not self.dt else 0.0
            return {"value": v, "ap50": v, **counts}
        if not self.dt:
            return {"value": 0.0, "ap50": 0.0, **counts}
        ap, ap50 = coco_ap(self.gt, self.dt, self.image_ids)
        return {"value": ap, "ap50": ap50, **counts}


def coco_ap(gt_rows: list[dict], dt_rows: list[dict], image_ids: list[int]) -> tuple[float, float]:
    """(AP@[.5:.95], AP50) over every category with a ground-truth box: pycocotools COCOeval(bbox),
    area range all, at most as many detections per image as were given."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    cats = sorted({int(r["category_id"]) for r in gt_rows} | {int(r["category_id"]) for r in dt_rows})
    anns = [{"id": i + 1, "image_id": int(r["image_id"]), "category_id": int(r["category_id"]),
             "bbox": [float(v) for v in r["bbox"]], "area": float(r["bbox"][2]) * float(r["bbox"][3]), "iscrowd": 0}
            for i, r in enumerate(gt_rows)]
    per_image = max(np.unique([int(r["image_id"]) for r in dt_rows], return_counts=True)[1])
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in sorted(set(image_ids))], "annotations": anns,
                      "categories": [{"id": c} for c in cats]}
        gt.createIndex()
        dt = gt.loadRes([{k: r[k] for k in ("image_id", "category_id", "bbox", "score")} for r in dt_rows])
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = sorted(set(image_ids))
        ev.params.maxDets = [max(100, int(per_image))]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, -1]    # [iou thresholds, recall, category], area all

    def mean(p):
        p = p[p > -1]
        return float(p.mean()) if p.size else 0.0
    return mean(prec), mean(prec[0])               # iouThrs[0] = 0.5


class Fidelity:
    """Streaming fidelity of candidate predictions to fp32 predictions (module docstring).

    update(candidate, fp32) per sample; report() -> {"metric", "value", "description",
    "num_samples", "per_key": [{"key", "metric", "value", ...}]}. The headline value is the lowest
    over the prediction's keys (every kept decision must follow fp32); its metric is the keys'
    common kind (fidelity_miou when label maps and masks are mixed)."""

    def __init__(self, ignore: int = IGNORE):
        self.ignore = ignore
        self.diff = DecisionDiff(self._agreement, strict=True, context="fidelity", reference_label="fp32")

    def _agreement(self, key: str, value):
        if isinstance(value, Detections):
            return _DetectionAgreement()
        return _BinaryAgreement() if np.asarray(value).dtype == bool else _LabelAgreement(self.ignore)

    @property
    def keys(self) -> dict:
        return self.diff.measures

    @property
    def n(self) -> int:
        return self.diff.samples

    def update(self, candidate, reference) -> None:
        self.diff.update(reference, candidate)

    def report(self) -> dict:
        if not self.keys:
            raise ZooError("fidelity: no predictions were compared")
        per_key = [{"key": k, "metric": a.metric, **a.figures()} for k, a in self.keys.items()]
        kinds = {p["metric"] for p in per_key}
        metric = kinds.pop() if len(kinds) == 1 else "fidelity_miou"
        return {"metric": metric, "value": min(p["value"] for p in per_key),
                "description": DESCRIPTIONS[metric] + ("; the lowest over the prediction's keys" if len(per_key) > 1
                                                       else ""),
                "num_samples": self.n, "per_key": per_key}
