"""UNet++ on DSB2018: the guide's preprocessing and its two IoU protocols.

FACTS.md section 5, seed 004. The dataset and upstream's one-off preparation (96x96 PNGs) are the
DSB2018 source's (zoo/datasets/dsb2018.py). Then, as upstream and the guide:
  1. model input (upstream dataset.py / guide preprocess): BGR uint8 -> albumentations-style
     Normalize(ImageNet mean/std, applied to BGR as-is, max_pixel_value 255) -> / 255 again -> CHW;
  2. target: mask / 255, positive where > 0.5;
  3. prediction, one mask per protocol: the guide thresholds the raw logits at 0.5, upstream
     thresholds sigmoid(logits) at 0.5 (computed in float32, as upstream).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.adapter import ModelAdapter
from zoo.metrics.binary import BinaryIoU
from zoo.weights import load_strict, read_checkpoint, unwrap_state_dict


def normalize(bgr: np.ndarray, mean, std, max_pixel: float, extra_divide: float) -> np.ndarray:
    """albumentations Normalize (float32: (x - mean*max) * 1/(std*max)), then upstream's extra
    `astype(float32) / 255`; HWC uint8 BGR -> CHW float32."""
    mean = np.asarray(mean, dtype=np.float32) * max_pixel
    denom = np.reciprocal(np.asarray(std, dtype=np.float32) * max_pixel)
    x = (bgr.astype(np.float32) - mean) * denom
    x = x.astype(np.float32) / np.float32(extra_divide)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


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
        return {"guide": logits > 0.5, "upstream": 1.0 / (1.0 + np.exp(-logits)) > 0.5}

    def metrics(self, source):
        protos = self.manifest.reference["protocols"]
        return [BinaryIoU("guide", protos["guide"]["description"], key="guide", aggregate="image"),
                BinaryIoU("upstream", protos["upstream"]["description"], key="upstream", aggregate="batch", group=16)]
