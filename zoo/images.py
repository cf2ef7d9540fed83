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
