"""Image decoding with one-line errors (cv2; the Cityscapes and DSB2018 readers use it)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from zoo.errors import ZooError


def imread(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """cv2 decode; a missing, unreadable or truncated file is a ZooError naming it."""
    path = Path(path)
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ZooError(f"{path}: cannot read ({exc.strerror})") from None
    img = cv2.imdecode(buf, flags) if buf.size else None
    if img is None:
        raise ZooError(f"{path}: unreadable or truncated image")
    return img


def uint8_values(arr: np.ndarray) -> np.ndarray:
    """The distinct values of a uint8 array, sorted: `np.unique` by counting (OpenCV's
    histogram) instead of sorting: a 2048x1024 label map in ~1 ms instead of ~30."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        return np.unique(arr)
    if arr.size == 0:
        return np.zeros(0, np.uint8)
    flat = np.ascontiguousarray(arr).reshape(-1, 1)
    hist = cv2.calcHist([flat], [0], None, [256], [0, 256]).ravel()
    return np.flatnonzero(hist).astype(np.uint8)
