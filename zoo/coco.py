"""COCO detection: the val2017 layout, the 80-label -> category-id mapping, results JSON and
pycocotools bbox evaluation (the guide's coco_eval.py; mmdet's CocoMetric names for the 12 stats).

Layout: ROOT/val2017/<12-digit id>.jpg and ROOT/annotations/instances_val2017.json."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from zoo.errors import ZooError, one_line

# mmdet CocoDataset's 80 classes, in label order (label i <-> the i-th category id, sorted).
CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush")
CAT_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31,
           32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
           58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87,
           88, 89, 90)
ANNOTATIONS = "annotations/instances_val2017.json"
IMAGES = "val2017"
# mmdet CocoMetric: proposal_nums (100, 300, 1000) as maxDets, and its names of COCOeval.stats
MAX_DETS = [100, 300, 1000]
STAT_NAMES = ("map", "map_50", "map_75", "map_s", "map_m", "map_l",
              "ar_100", "ar_300", "ar_1000", "ar_s_1000", "ar_m_1000", "ar_l_1000")


def load_coco(ann_file: Path):
    """pycocotools COCO of an instances JSON; a missing or malformed file is a one-line error."""
    from pycocotools.coco import COCO
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise ZooError(f"{ann_file}: annotation file not found")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(ann_file))
    except Exception as exc:
        raise ZooError(f"{ann_file}: not a COCO instances file ({one_line(exc)[:200]})") from None
    cats = sorted(coco.getCatIds())
    if tuple(cats) != CAT_IDS:
        raise ZooError(f"{ann_file}: expected the 80 COCO categories (ids 1..90), got {len(cats)} ids")
    names = tuple(c["name"] for c in coco.loadCats(cats))
    if names != CLASSES:
        bad = next(i for i, (a, b) in enumerate(zip(names, CLASSES)) if a != b)
        raise ZooError(f"{ann_file}: category {cats[bad]} is {names[bad]!r}, expected {CLASSES[bad]!r}")
    return coco


def parse_image_id(text: str) -> int:
    """An ids-file entry: an image id ('397133') or a file name ('000000397133.jpg')."""
    stem = Path(text.strip()).stem
    try:
        return int(stem)
    except ValueError:
        raise ZooError(f"not a COCO image id or file name: {text!r}") from None


def to_results(image_id: int, boxes_xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> list[dict]:
    """Detections of one image -> COCO results records (bbox as [x, y, w, h], category ids)."""
    out = []
    for (x1, y1, x2, y2), s, lab in zip(np.asarray(boxes_xyxy, dtype=np.float64), scores, labels):
        out.append({"image_id": int(image_id), "category_id": CAT_IDS[int(lab)],
                    "bbox": [round(float(x1), 3), round(float(y1), 3), round(float(x2 - x1), 3), round(float(y2 - y1), 3)],
                    "score": round(float(s), 5)})
    return out


def evaluate(coco, results: list[dict], image_ids: list[int]) -> dict:
    """COCOeval(iouType='bbox') over image_ids with the 80 categories and maxDets 100/300/1000;
    returns the 12 stats by name (NaN-free: pycocotools' -1 'no data' stays -1)."""
    from pycocotools.cocoeval import COCOeval
    if not results:
        return {name: 0.0 for name in STAT_NAMES}
    with contextlib.redirect_stdout(io.StringIO()) as log:
        dt = coco.loadRes(results)
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
    from zoo.fileutil import atomic_write_text
    atomic_write_text(Path(path), json.dumps(results))
