"""Fixtures for the FCN-8s tests (run inside the fcn8s environment: torch, mmseg, mmcv, ORT).

The official checkpoint cannot be downloaded here: tests use mmseg's own FCN with random weights
whose BatchNorm statistics are calibrated on structured images (so logits are spread out), saved
in the official mmcv container format. Data: the built-in VOC sample (3 real images) and
synthetic VOCdevkit trees in the real layout."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.zootest import calibrate_all_bn, last_json, structured_images, writable_copy  # noqa: F401  (re-exported)
from PIL import Image

ROOT = Path(__file__).resolve().parents[3]
MODEL_DIR = ROOT / "models" / "fcn8s"
BUILTIN = ROOT / "zoo" / "samples" / "voc" / "VOCdevkit"  # the VOC family's built-in sample
SHARED = Path(os.environ.get("ZOO_SHARED", ROOT.parent / "shared"))
SHARED_VOC = SHARED / "datasets" / "voc2012" / "VOCdevkit"
# the VOC colour map (index -> RGB), for writing palette PNGs as the dataset stores them
PALETTE = []
for i in range(256):
    c, r, g, b = i, 0, 0, 0
    for j in range(8):
        r |= ((c >> 0) & 1) << (7 - j)
        g |= ((c >> 1) & 1) << (7 - j)
        b |= ((c >> 2) & 1) << (7 - j)
        c >>= 3
    PALETTE += [r, g, b]


def calibrated_model(seed: int = 0, size=(256, 256)):
    """The adapter's network (mmseg FCN wrapped for export) with calibrated random weights."""
    from zoo.manifest import load_manifest
    torch.manual_seed(seed)
    net = load_manifest("fcn8s").adapter().build()
    return calibrate_all_bn(net, [torch.from_numpy(structured_images(2, size, seed=seed + 1))])


@pytest.fixture(scope="session")
def model():
    return calibrated_model(0)


@pytest.fixture(scope="session")
def checkpoint(model, tmp_path_factory) -> Path:
    """Calibrated random weights in the official container: {'meta': {...}, 'state_dict': ...}."""
    from models.fcn8s.adapter import CLASSES
    path = tmp_path_factory.mktemp("weights") / "fcn_r50_random.pth"
    torch.save({"meta": {"CLASSES": list(CLASSES), "mmseg_version": "test"},
                "state_dict": model.seg.state_dict()}, path)
    return path


def write_voc(root: Path, ids: list[str], sizes: dict | None = None, seed: int = 0, split_ids=None) -> Path:
    """A synthetic VOCdevkit/VOC2012 tree: JPEG images, palette label PNGs with classes 0..20 and a
    255 border, ImageSets/Segmentation/val.txt."""
    rng = np.random.default_rng(seed)
    voc = root / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    for k, sid in enumerate(ids):
        h, w = (sizes or {}).get(sid, (375, 500))
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([(127 + 120 * np.sin(xx / w * (3 + k) + c) * np.cos(yy / h * (2 + c))) for c in range(3)], -1)
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(voc / "JPEGImages" / f"{sid}.jpg", quality=92)
        lab = np.zeros((h, w), np.uint8)
        for _ in range(4):
            c = int(rng.integers(1, 21))
            y0, x0 = int(rng.integers(0, h - 40)), int(rng.integers(0, w - 40))
            y1, x1 = y0 + int(rng.integers(20, h // 2)), x0 + int(rng.integers(20, w // 2))
            lab[y0:y1, x0:x1] = 255
            lab[y0 + 2:y1 - 2, x0 + 2:x1 - 2] = c
        im = Image.fromarray(lab, "P")
        im.putpalette(PALETTE)
        im.save(voc / "SegmentationClass" / f"{sid}.png")
    (voc / "ImageSets/Segmentation/val.txt").write_text("\n".join(split_ids or ids) + "\n")
    return root


def copy_builtin(dest: Path) -> Path:
    """A writable copy of the built-in sample tree (to damage it in bad-input tests)."""
    return writable_copy(BUILTIN, dest)
