"""Fixtures for the Fast-SCNN tests (run inside the fastscnn environment: torch, onnxruntime, PIL).

Full-size Cityscapes cannot be redistributed: full-size (1024x2048) trees are made synthetically in
the real layout; the one real image is the 256x128 sample shipped in zoo/samples/cityscapes (and
shared/datasets/cityscapes_pseudo when present)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.zootest import (calibrate_bn, last_json, result_files,  # noqa: F401  (re-exported for the tests)
                           structured_images, writable_copy)

ROOT = Path(__file__).resolve().parents[3]
MODEL_DIR = ROOT / "models" / "fastscnn"
BUILTIN = ROOT / "zoo" / "samples" / "cityscapes"
SAMPLE_NAME = "frankfurt_000000_000294"
SHARED = Path(os.environ.get("ZOO_SHARED", ROOT.parent / "shared"))
SHARED_PSEUDO = SHARED / "datasets" / "cityscapes_pseudo"
FULL = (1024, 2048)
# every labelId of Cityscapes' labels.py that appears in gtFine labelIds files (0..33)
LABEL_IDS = np.arange(34, dtype=np.uint8)


def calibrated_model(seed: int = 0, size: tuple[int, int] = (256, 512), ppm: str = "exact"):
    """A FastSCNN with random weights and BatchNorm statistics calibrated on structured inputs, so
    the logits are spread out (a freshly initialised BN gives near-flat outputs), in eval mode."""
    from models.fastscnn.model import FastSCNN
    torch.manual_seed(seed)
    net = FastSCNN(ppm=ppm)
    return calibrate_bn(net, [torch.from_numpy(structured_images(2, size, seed=seed + 1))])


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A calibrated random checkpoint in the official format (raw state_dict, 284 entries)."""
    path = tmp_path_factory.mktemp("weights") / "fast_scnn_random.pth"
    torch.save(calibrated_model(0).state_dict(), path)
    return path


def write_sample(root: Path, name: str, rgb: np.ndarray, label_ids: np.ndarray | None,
                 train_ids: np.ndarray | None = None, split: str = "val") -> Path:
    """One sample in the real Cityscapes layout; returns the image path."""
    city = name.split("_", 1)[0]
    img_dir = root / "leftImg8bit" / split / city
    gt_dir = root / "gtFine" / split / city
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    img = img_dir / f"{name}_leftImg8bit.png"
    Image.fromarray(rgb, "RGB").save(img, compress_level=1)
    if label_ids is not None:
        Image.fromarray(label_ids, "L").save(gt_dir / f"{name}_gtFine_labelIds.png", compress_level=1)
    if train_ids is not None:
        Image.fromarray(train_ids, "L").save(gt_dir / f"{name}_gtFine_labelTrainIds.png", compress_level=1)
    return img


def synthetic_tree(root: Path, names: list[str], size: tuple[int, int] = FULL, seed: int = 0,
                   sizes: dict | None = None) -> Path:
    """Synthetic Cityscapes val tree (labelIds only): smooth RGB images, blocky labelIds covering
    every id 0..33 (so both evaluated and ignored pixels occur)."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(names):
        h, w = (sizes or {}).get(name, size)
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([(127 + 120 * np.sin(xx / w * (3 + k) + c) * np.cos(yy / h * (2 + c))) for c in range(3)], -1)
        rgb = np.clip(rgb + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
        blocks = rng.choice(LABEL_IDS, size=(8, 16))
        label = np.repeat(np.repeat(blocks, -(-h // 8), 0), -(-w // 16), 1)[:h, :w].astype(np.uint8)
        write_sample(root, name, rgb, label)
    return root


def copy_builtin(dest: Path) -> Path:
    """A writable copy of the built-in sample tree (to damage it in bad-input tests)."""
    return writable_copy(BUILTIN, dest)


