"""RetinaNet postprocessing in numpy, outside the graph, as mmdet 3.3.0 does it
(`BaseDenseHead._predict_by_feat_single` + `_bbox_post_process`, test_cfg of
retinanet_r50_fpn): per level, the (anchor, class) pairs with sigmoid score > score_thr, the
`nms_pre` best of them; DeltaXYWHBBoxCoder decoding (means 0, stds 1, wh_ratio_clip 16/1000)
clipped to the input; boxes with zero width or height dropped (min_bbox_size 0); class-aware NMS
(mmcv `batched_nms`: boxes offset per class, IoU 0.5, offset 0); the `max_per_img` best.

The letterbox (keep-ratio resize to 640, centre padding, as the guide) and the mapping of the
boxes back to the original image (the guide's mmdetection_coco_postprocess.py) are here too."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from zoo.mm import imrescale_size

NUM_CLASSES = 80
STRIDES = (8, 16, 32, 64, 128)
OCTAVE_BASE_SCALE = 4
SCALES_PER_OCTAVE = 3
RATIOS = (0.5, 1.0, 2.0)
NUM_ANCHORS = len(RATIOS) * SCALES_PER_OCTAVE
WH_RATIO_CLIP = 16 / 1000


@dataclass(frozen=True)
class DetectCfg:
    nms_pre: int = 1000
    score_thr: float = 0.05
    iou_threshold: float = 0.5
    max_per_img: int = 100
    min_bbox_size: float = 0.0


def base_anchors(stride: int) -> np.ndarray:
    """mmdet AnchorGenerator (center_offset 0, scale_major): ratio-major, scale-minor order."""
    scales = OCTAVE_BASE_SCALE * 2.0 ** (np.arange(SCALES_PER_OCTAVE) / SCALES_PER_OCTAVE)
    h_ratios = np.sqrt(np.asarray(RATIOS))
    w_ratios = 1.0 / h_ratios
    ws = (stride * w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (stride * h_ratios[:, None] * scales[None, :]).reshape(-1)
    return np.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], axis=-1).astype(np.float32)


@lru_cache(maxsize=8)
def level_anchors(height: int, width: int) -> tuple[tuple[int, ...], np.ndarray]:
    """(rows per level, all anchors [sum, 4] float32) for an input of height x width, rows
    ordered (y, x, anchor) as the head's permute(0, 2, 3, 1).reshape(-1, C)."""
    sizes, out = [], []
    for s in STRIDES:
        fh, fw = math.ceil(height / s), math.ceil(width / s)
        sx, sy = np.meshgrid(np.arange(fw, dtype=np.float32) * s, np.arange(fh, dtype=np.float32) * s)
        shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=-1)
        a = (shifts[:, None, :] + base_anchors(s)[None]).reshape(-1, 4)
        sizes.append(a.shape[0])
        out.append(a)
    anchors = np.concatenate(out)
    anchors.setflags(write=False)
    return tuple(sizes), anchors


def decode(anchors: np.ndarray, deltas: np.ndarray, max_hw: tuple[int, int]) -> np.ndarray:
    """mmdet delta2bbox (means 0, stds 1), clipped to [0, W] x [0, H]; float32 like torch."""
    anchors = anchors.astype(np.float32)
    deltas = deltas.astype(np.float32)
    pxy = (anchors[:, :2] + anchors[:, 2:]) * np.float32(0.5)
    pwh = anchors[:, 2:] - anchors[:, :2]
    max_ratio = np.float32(abs(math.log(WH_RATIO_CLIP)))
    dwh = np.clip(deltas[:, 2:], -max_ratio, max_ratio)
    gxy = pxy + pwh * deltas[:, :2]
    gwh = pwh * np.exp(dwh)
    boxes = np.concatenate([gxy - gwh * np.float32(0.5), gxy + gwh * np.float32(0.5)], axis=-1)
    h, w = max_hw
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    return boxes


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS (mmcv nms, offset 0): indices kept, in descending score order. `max_keep`
    stops after that many: a box's fate depends only on higher-scored boxes, so the first
    `max_keep` kept are the same as those of the full run (which mmdet then cuts to max_per_img)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    suppressed = np.zeros(len(order), dtype=bool)
    for pos, i in enumerate(order):
        if suppressed[pos]:
            continue
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        rest = order[pos + 1:]
        xx1 = np.maximum(x1[i], x1[rest])
        yy1 = np.maximum(y1[i], y1[rest])
        xx2 = np.minimum(x2[i], x2[rest])
        yy2 = np.minimum(y2[i], y2[rest])
        inter = np.maximum(xx2 - xx1, 0) * np.maximum(yy2 - yy1, 0)
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[pos + 1:] |= iou > iou_threshold
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float,
                max_keep: int | None = None) -> np.ndarray:
    """mmcv batched_nms: class-aware NMS by offsetting each class's boxes by
    label * (max coordinate + 1), in float32."""
    if boxes.size == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = labels.astype(np.float32) * (boxes.max() + np.float32(1))
    return nms(boxes + offsets[:, None], scores, iou_threshold, max_keep)


def top_k_stable(vals: np.ndarray, k: int) -> np.ndarray:
    """`np.argsort(-vals, kind="stable")[:k]` (largest first, ties by position) without sorting
    everything: a partition finds the k-th largest value, only the candidates at or above it are
    sorted. Random-weight or poorly calibrated outputs can put millions of scores above the
    threshold; a trained model a few hundred."""
    n = len(vals)
    if n <= k:
        return np.argsort(-vals, kind="stable")
    kth = np.partition(vals, n - k)[n - k]
    above = np.flatnonzero(vals > kth)
    equal = np.flatnonzero(vals == kth)[:k - len(above)]
    idx = np.concatenate([above, equal])
    return idx[np.argsort(-vals[idx], kind="stable")]


def detect(raw: np.ndarray, input_hw: tuple[int, int], cfg: DetectCfg = DetectCfg()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's graph output [anchors, 80 sigmoid scores + 4 deltas] -> (boxes [k, 4] xyxy in
    input coordinates, scores [k], labels [k]), k <= max_per_img, best first."""
    sizes, anchors = level_anchors(*input_hw)
    if raw.shape != (anchors.shape[0], NUM_CLASSES + 4):
        raise ValueError(f"expected a [{anchors.shape[0]}, {NUM_CLASSES + 4}] output for a {input_hw} input, got {list(raw.shape)}")
    kept_scores, kept_labels, kept_rows = [], [], []
    start = 0
    for n in sizes:
        scores = raw[start:start + n, :NUM_CLASSES]
        flat = np.flatnonzero(scores.ravel() > cfg.score_thr)  # row-major (anchor, class), as torch.nonzero
        vals = scores.ravel()[flat]
        order = top_k_stable(vals, cfg.nms_pre)
        flat, vals = flat[order], vals[order]
        kept_rows.append(start + flat // NUM_CLASSES)
        kept_labels.append(flat % NUM_CLASSES)
        kept_scores.append(vals)
        start += n
    rows = np.concatenate(kept_rows)
    scores = np.concatenate(kept_scores).astype(np.float32)
    labels = np.concatenate(kept_labels).astype(np.int64)
    boxes = decode(anchors[rows], raw[rows, NUM_CLASSES:], input_hw)
    if cfg.min_bbox_size >= 0:
        ok = ((boxes[:, 2] - boxes[:, 0]) > cfg.min_bbox_size) & ((boxes[:, 3] - boxes[:, 1]) > cfg.min_bbox_size)
        boxes, scores, labels = boxes[ok], scores[ok], labels[ok]
    keep = batched_nms(boxes, scores, labels, cfg.iou_threshold, cfg.max_per_img)
    return boxes[keep], scores[keep], labels[keep]


# ----------------------------------------------------------------------------- letterbox

def letterbox_geometry(w: int, h: int, size: int) -> dict:
    """mmcv.imrescale to (size, size), then centre padding (the guide's preprocess)."""
    new_w, new_h, f = imrescale_size(w, h, (size, size))
    return {"new_w": new_w, "new_h": new_h, "factor": f,
            "pad_left": (size - new_w) // 2, "pad_top": (size - new_h) // 2}


def to_original(boxes: np.ndarray, w: int, h: int, size: int) -> np.ndarray:
    """The guide's mapping back: scale = min(size/w, size/h), pads (size - w*scale)//2 in float,
    x = (x - pad_left) / scale, y likewise; x1, y1 clipped at 0, x2 at w, y2 at h."""
    scale = min(size / w, size / h)
    pad_left = (size - w * scale) // 2
    pad_top = (size - h * scale) // 2
    out = boxes.astype(np.float64).copy()
    out[:, 0::2] = (out[:, 0::2] - pad_left) / scale
    out[:, 1::2] = (out[:, 1::2] - pad_top) / scale
    out[:, 0] = np.maximum(out[:, 0], 0)
    out[:, 1] = np.maximum(out[:, 1], 0)
    out[:, 2] = np.minimum(out[:, 2], w)
    out[:, 3] = np.minimum(out[:, 3], h)
    return out
