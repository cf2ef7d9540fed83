"""Fixtures for the NAS-FPN tests (run inside the nasfpn environment: torch, mmdet, patched mmcv,
pycocotools, ORT).

The official checkpoint cannot be downloaded here: tests use mmdet's own RetinaNet NAS-FPN with
random weights, every BatchNorm calibrated on structured images and the classification bias set
so that scores spread around the 0.05 threshold (mmdet's prior-probability init gives 0.01 for
every anchor: no detections, nothing to compare). Data: the built-in COCO sample (5 real val2017
images, real annotations) and copies of it."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]
MODEL_DIR = ROOT / "models" / "nasfpn"
BUILTIN = MODEL_DIR / "data" / "coco"
SHARED = Path(os.environ.get("ZOO_SHARED", ROOT.parent / "shared"))
SHARED_COCO = SHARED / "datasets" / "coco"


def structured_images(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, 3, h, w), np.float32)
    for i in range(n):
        for c in range(3):
            fy, fx, ph = rng.uniform(1, 8), rng.uniform(1, 8), rng.uniform(0, 6.3)
            out[i, c] = 1.5 * np.sin(yy / h * fy * 3.1416 + ph) * np.cos(xx / w * fx * 3.1416)
        for _ in range(3):
            by, bx = rng.integers(0, h * 3 // 4), rng.integers(0, w * 3 // 4)
            out[i, :, by:by + h // 5, bx:bx + w // 5] += rng.normal(0, 1.5, (3, 1, 1)).astype(np.float32)
    return out


def calibrate_all_bn(net, batches):
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.eval()
    for m in bns:
        m.train()
    with torch.no_grad():
        for x in batches:
            net(x)
    return net.eval()


def calibrated_model(seed: int = 0):
    from zoo.manifest import load_manifest
    torch.manual_seed(seed)
    net = load_manifest("nasfpn").adapter().build()
    net = calibrate_all_bn(net, [torch.from_numpy(structured_images(2, (384, 384), seed=seed + 1))])
    with torch.no_grad():  # scores spread around the 0.05 threshold (sigmoid(-2.5) = 0.076)
        net.det.bbox_head.retina_cls.bias.fill_(-2.5)
    return net


@pytest.fixture(scope="session")
def model():
    return calibrated_model(0)


@pytest.fixture(scope="session")
def checkpoint(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "retinanet_nasfpn_random.pth"
    torch.save({"meta": {"mmdet_version": "test"}, "state_dict": model.det.state_dict()}, path)
    return path


def copy_builtin(dest: Path) -> Path:
    shutil.copytree(BUILTIN, dest)
    for p in dest.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def last_json(proc) -> dict:
    return json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
