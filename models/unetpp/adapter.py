"""UNet++ on DSB2018: the guide's preprocessing and its two IoU protocols.

FACTS.md section 5, seed 004. The dataset and upstream's one-off preparation (96x96 PNGs) are the
DSB2018 source's (zoo/datasets/dsb2018.py). Then, as upstream and the guide:
  1. model input (upstream dataset.py / guide preprocess): BGR uint8 -> albumentations-style
     Normalize(ImageNet mean/std, applied to BGR as-is, max_pixel_value 255) -> / 255 again -> CHW;
  2. target: mask / 255, positive where > 0.5;
  3. prediction, one mask per protocol: the guide thresholds the raw logits at 0.5, upstream
     thresholds torch.sigmoid(logits) (float32) at 0.5 -- reproduced exactly, without torch, as
     logits > UPSTREAM_LOGIT_THRESHOLD (see there).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.adapter import ModelAdapter
from zoo.metrics.binary import BinaryIoU
from zoo.checkpoints import load_strict, read_checkpoint, unwrap_state_dict


def normalize(bgr: np.ndarray, mean, std, max_pixel: float, extra_divide: float) -> np.ndarray:
    """albumentations Normalize (float32: (x - mean*max) * 1/(std*max)), then upstream's extra
    `astype(float32) / 255`; HWC uint8 BGR -> CHW float32."""
    mean = np.asarray(mean, dtype=np.float32) * max_pixel
    denom = np.reciprocal(np.asarray(std, dtype=np.float32) * max_pixel)
    x = (bgr.astype(np.float32) - mean) * denom
    x = x.astype(np.float32) / np.float32(extra_divide)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


# Upstream's decision (metrics.py iou_score: `torch.sigmoid(output) ... > 0.5`, float32) is a pure
# function of the logit x, and exactly x > 1.5 * 2**-24 (8.940697e-08, bits 0x33C00000): below it
# float32 rounding makes 1 + exp(-x) equal 2, so the sigmoid is exactly 0.5, not above it; x = 0,
# -0, negatives, -inf and NaN are background, +inf foreground. Found by bisection over the float32
# bit patterns with torch.sigmoid (2.13, CPU: the same with ATen's default, AVX2 and AVX512
# kernels) and checked against it on every one of the 2**32 float32 values. numpy's float32
# 1 / (1 + exp(-x)) > 0.5 is not the same set: it starts at 1.2318974e-07, so logits between the
# two were foreground upstream and background here. tests/models/unetpp/test_unetpp_upstream_decision.py.
UPSTREAM_LOGIT_THRESHOLD = np.float32(1.5 * 2.0 ** -24)


def upstream_foreground(logits) -> np.ndarray:
    """torch.sigmoid(logits) > 0.5 in float32, bit for bit, without torch (and without the
    overflow warnings of exp on large negative logits)."""
    with np.errstate(invalid="ignore"):  # NaN compares False, as torch's NaN sigmoid does
        return np.asarray(logits, dtype=np.float32) > UPSTREAM_LOGIT_THRESHOLD


class UNetPPAdapter(ModelAdapter):
    def build(self):
        from models.unetpp.model import NestedUNet
        o = self.options
        return NestedUNet(num_classes=o["num_classes"], input_channels=o["input_channels"],
                          deep_supervision=o["deep_supervision"], upsample=o["upsample"])

    def load_weights(self, module, path: Path) -> None:
        # Upstream saves a raw state_dict; accept an {'state_dict': ...} container and a
        # DataParallel 'module.' prefix, nothing looser.
        sd = unwrap_state_dict(read_checkpoint(path), strip_prefixes=("module.",))
        load_strict(module, sd, path)

    def preprocess(self, sample):
        p = self.manifest.preprocess
        return normalize(sample.image, p["mean"], p["std"], p["max_pixel_value"], p["extra_divide"]), None

    def target(self, sample):
        return sample.label.astype(np.float32) / 255.0 > 0.5

    def postprocess(self, output, meta):
        logits = np.asarray(output, dtype=np.float32)[0]  # the single class channel
        return {"guide": logits > 0.5, "upstream": upstream_foreground(logits)}

    def metrics(self, source):
        protos = self.manifest.reference["protocols"]
        return [BinaryIoU("guide", protos["guide"]["description"], key="guide", aggregate="image"),
                BinaryIoU("upstream", protos["upstream"]["description"], key="upstream", aggregate="batch", group=16)]
