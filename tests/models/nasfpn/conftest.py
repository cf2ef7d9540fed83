"""Fixtures for the NAS-FPN tests (run inside the nasfpn environment: torch, mmdet, patched mmcv,
pycocotools, ORT).

The official checkpoint cannot be downloaded here: tests use mmdet's own RetinaNet NAS-FPN with
random weights, every BatchNorm calibrated on structured images and the classification bias set
so that scores spread around the 0.05 threshold (mmdet's prior-probability init gives 0.01 for
every anchor: no detections, nothing to compare). Data: the built-in COCO sample (5 real val2017
images, real annotations) and copies of it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.zootest import calibrate_all_bn, last_json, structured_images, writable_copy  # noqa: F401  (re-exported)

ROOT = Path(__file__).resolve().parents[3]
MODEL_DIR = ROOT / "models" / "nasfpn"
BUILTIN = ROOT / "zoo" / "samples" / "coco"  # the COCO family's built-in sample
SHARED = Path(os.environ.get("ZOO_SHARED", ROOT.parent / "shared"))
SHARED_COCO = SHARED / "datasets" / "coco"


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
    """A writable copy of the built-in sample tree (to damage it in bad-input tests)."""
    return writable_copy(BUILTIN, dest)
