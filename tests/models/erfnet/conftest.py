"""Fixtures for the ErfNet tests (run inside the erfnet environment: torch, onnxruntime, PIL, cv2).

There is no built-in ErfNet checkpoint (the official one has no published checksum), so the tests
use a random ERFNet whose BatchNorm statistics are calibrated (so the logits are spread out, not
the flat output of an untrained network) and whose BN gammas include small values (so the
guide's BN-weight clamp has something to change). It is saved the way the official file is:
'module.'-prefixed keys, without num_batches_tracked and without encoder.output_conv.

Full-size Cityscapes data cannot be redistributed: `write_cityscapes` writes synthetic
2048x1024 samples in the real layout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.erfnet.model import ERFNet, batchnorms
from zoo.datasets.cityscapes import LABEL_TO_TRAIN

ROOT = Path(__file__).resolve().parents[3]
MODEL_DIR = ROOT / "models" / "erfnet"
SHARED = Path(os.environ.get("ZOO_SHARED", ROOT.parent / "shared"))
SHARED_CITYSCAPES = SHARED / "datasets" / "cityscapes_pseudo"
BUILTIN = ROOT / "zoo" / "samples" / "cityscapes"
SMALL_GAMMA_FRACTION = 0.15


def smooth_images(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """n RGB images in [0, 1] with structure at several scales (blurred noise + gradients)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(h // 32, 1), max(w // 32, 1), generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    fine = torch.nn.functional.avg_pool2d(torch.rand(n, 3, h, w, generator=g), 5, 1, 2)
    return (0.7 * x + 0.3 * fine).clamp(0, 1)


def make_erfnet(seed: int = 0, small_gamma_fraction: float = SMALL_GAMMA_FRACTION) -> ERFNet:
    """Random ERFNet, BN gammas ~U(0.5, 1.5) with a fraction in [-0.01, 0.01], betas ~N(0, 0.1),
    running statistics calibrated on smooth images, in eval mode."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    net = ERFNet(20)
    with torch.no_grad():
        for _, bn in batchnorms(net):
            c = bn.num_features
            bn.weight.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=g))
            small = torch.rand(c, generator=g) < small_gamma_fraction
            bn.weight[small] = torch.empty(int(small.sum())).uniform_(-0.01, 0.01, generator=g)
            bn.bias.copy_(torch.randn(c, generator=g) * 0.1)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration pass
        net.train()
        net(smooth_images(2, 128, 256, seed + 2))
    return net.eval()


def official_style_state_dict(net: torch.nn.Module) -> dict:
    """As the official checkpoint may be: DataParallel 'module.' prefix, no num_batches_tracked,
    no encoder.output_conv."""
    return {f"module.{k}": v.clone() for k, v in net.state_dict().items()
            if not k.endswith("num_batches_tracked") and not k.startswith("encoder.output_conv.")}


def to_input(rgb: np.ndarray) -> np.ndarray:
    """The guide's preprocessing written out independently: PIL bilinear to short side 512, /255, CHW."""
    img = Image.fromarray(rgb)
    w, h = img.size
    size = (int(512 * w / h), 512) if w > h else (512, int(512 * h / w))
    return (np.asarray(img.resize(size, Image.BILINEAR), dtype=np.float32) / 255.0).transpose(2, 0, 1).copy()


def label_ids_from_train_ids(train_ids: np.ndarray) -> np.ndarray:
    inverse = np.zeros(256, dtype=np.uint8)  # 255 (and anything else) -> labelId 0 "unlabeled"
    for label_id, train_id in LABEL_TO_TRAIN.items():
        inverse[train_id] = label_id
    return inverse[train_ids]


def write_cityscapes(root: Path, samples: dict[str, tuple[np.ndarray, np.ndarray]],
                     kinds: tuple[str, ...] = ("labelTrainIds",)) -> Path:
    """samples: '<city>_<seq>_<frame>' -> (RGB uint8 HxWx3, trainIds uint8 HxW with 255 = void);
    writes leftImg8bit/val/<city>/... and the requested gtFine label kinds."""
    for name, (rgb, train_ids) in samples.items():
        city = name.split("_")[0]
        img_dir = root / "leftImg8bit" / "val" / city
        gt_dir = root / "gtFine" / "val" / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(img_dir / f"{name}_leftImg8bit.png", compress_level=1)
        if "labelTrainIds" in kinds:
            Image.fromarray(train_ids).save(gt_dir / f"{name}_gtFine_labelTrainIds.png", compress_level=1)
        if "labelIds" in kinds:
            Image.fromarray(label_ids_from_train_ids(train_ids)).save(gt_dir / f"{name}_gtFine_labelIds.png",
                                                                      compress_level=1)
    return root


@pytest.fixture(scope="session", autouse=True)
def torch_single_thread():
    """PyTorch in this process runs on one thread: its OpenMP barriers stall for whole time
    slices when the machine is shared (a 128x256 forward took 5 s on 2 threads under load,
    0.3 s on one)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory) -> Path:
    """One cache per test session: exports and compiled models are shared between tests."""
    return tmp_path_factory.mktemp("zoo-cache")


@pytest.fixture(scope="session")
def run_zoo(zoo_cache):
    """Run the real CLI (`python -m zoo ...`) in a subprocess; returns CompletedProcess.
    OMP_NUM_THREADS=1 keeps PyTorch's parity reference on one thread (see torch_single_thread);
    the runtimes still use --threads (default: every core)."""
    def _run(*args, cache: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        env = {**os.environ, "ZOO_CACHE": str(cache or zoo_cache), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
    return _run


@pytest.fixture(scope="session")
def erfnet() -> ERFNet:
    """The calibrated random ERFNet (eval mode) the checkpoint fixture holds."""
    return make_erfnet(0)


@pytest.fixture(scope="session")
def checkpoint(erfnet, tmp_path_factory) -> Path:
    """The calibrated model saved official-style ('module.' keys, optional keys left out)."""
    path = tmp_path_factory.mktemp("weights") / "erfnet_calibrated.pth"
    torch.save(official_style_state_dict(erfnet), path)
    return path


@pytest.fixture(scope="session")
def synthetic(erfnet) -> dict:
    """Three full-size (2048x1024) samples in two cities whose labels are the model's own
    prediction at 512x1024, each pixel repeated 2x2 (so the guide's nearest resize gets it back),
    with the void class and a band of pixels set to 255: on these, a correct pipeline scores
    IoU ~1 on every class present. {"samples": name -> (rgb, trainIds), "pred": name -> pred}."""
    names = ["frankfurt_000000_000001", "frankfurt_000001_000002", "lindau_000000_000003"]
    rgb = (smooth_images(len(names), 1024, 2048, seed=7).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    x = np.stack([to_input(im) for im in rgb])
    with torch.inference_mode():
        pred = erfnet(torch.from_numpy(x)).argmax(1).numpy().astype(np.uint8)
    samples = {}
    for name, im, p in zip(names, rgb, pred):
        lab = p.repeat(2, axis=0).repeat(2, axis=1)
        lab[lab == 19] = 255
        lab[:40] = 255
        samples[name] = (im, lab)
    return {"samples": samples, "pred": dict(zip(names, pred))}


def expected_miou(pred: dict, samples: dict) -> float:
    """Upstream's evaluation written out independently on given predictions: labels
    nearest-resized (odd rows/columns at scale 2) with 255 -> 19, iouEval(20, 19)."""
    ev = UpstreamIouEval(20, 19)
    for name, (_, lab) in samples.items():
        gt = lab[1::2, 1::2].astype(np.int64)
        gt[gt == 255] = 19
        ev.add_batch(torch.from_numpy(pred[name].astype(np.int64))[None, None], torch.from_numpy(gt)[None, None])
    return ev.iou()[0]


def result_files(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if p.is_file()]


def last_result(proc) -> dict:
    return json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())


class UpstreamIouEval:
    """erfnet_pytorch eval/iouEval.py re-implemented the way upstream computes it (for checking
    zoo.metrics.segmentation.IouEvalMetric independently): one-hot prediction and target over nClasses
    channels with torch scatter, drop the ignore channel, TP/FP/FN as sums of products, double
    accumulators, IoU = TP / (TP + FP + FN + 1e-15), plain mean. Inputs: predicted indices and
    targets (already relabelled 255 -> 19), both N x 1 x H x W long tensors."""

    def __init__(self, n_classes: int = 20, ignore_index: int = 19):
        self.n, self.ignore = n_classes, ignore_index
        k = n_classes - 1
        self.tp, self.fp, self.fn = torch.zeros(k).double(), torch.zeros(k).double(), torch.zeros(k).double()

    def add_batch(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x_onehot = torch.zeros(x.size(0), self.n, x.size(2), x.size(3)).scatter_(1, x, 1).float()
        y_onehot = torch.zeros(y.size(0), self.n, y.size(2), y.size(3)).scatter_(1, y, 1).float()
        ignores = y_onehot[:, self.ignore].unsqueeze(1)
        x_onehot, y_onehot = x_onehot[:, :self.ignore], y_onehot[:, :self.ignore]
        dims = (0, 2, 3)
        self.tp += (x_onehot * y_onehot).sum(dims).double()
        self.fp += (x_onehot * (1 - y_onehot - ignores)).sum(dims).double()
        self.fn += ((1 - x_onehot) * y_onehot).sum(dims).double()

    def iou(self) -> tuple[float, list[float]]:
        per = self.tp / (self.tp + self.fp + self.fn + 1e-15)
        return float(per.mean()), per.tolist()
