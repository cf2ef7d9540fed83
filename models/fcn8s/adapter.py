"""FCN (mmsegmentation `fcn_r50-d8`, the guide's "FCN-8s") on PASCAL VOC2012 val.

FACTS.md section 1, seed 000 (Ascend `segmentation/FCN-8s`). The network is mmsegmentation
1.2.2's own, built from the config that ships in the package
(`fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py`: dilated ResNet50-V1c-D8 + FCNHead, 21 classes),
SyncBN reverted to BatchNorm. Two protocols, one per run (option `protocol`):

guide (default; om mIoU 69.01):
  1. cv2 BGR -> keep-ratio resize to fit 500x500: scale = min(500/w, 500/h), size
     floor(w*scale) x floor(h*scale), cv2 bilinear -> mean/std normalisation in RGB -> centre
     zero padding to 500x500 (pad_left = (500-new_w)//2, pad_top = (500-new_h)//2);
  2. the graph: logits at 1/8 -> bilinear resize to 500x500 (align_corners False);
  3. argmax -> crop [pad_top : 500-pad_top, pad_left : 500-pad_left] with the guide's float pads
     pad = (500 - w*scale)//2 -> bilinear resize of the *label map* (as float) to h x w ->
     truncation to int (the guide's FCN-8s_postprocess.py);
upstream (mmseg's test pipeline; published mIoU 67.085):
  1. cv2 BGR -> mmcv.imrescale to (2048, 512) (the config's Resize scale, the manifest's
     preprocess.upstream_scale; short side 512 for VOC's <= 500 px images),
     int(x*scale + 0.5), cv2 bilinear -> normalisation; no padding: every image keeps its own
     size (dynamic height/width, batch 1);
  2. the graph as above, at the input's size;
  3. logits resized bilinearly to h x w, then argmax (mmseg's `postprocess_result`).
The prediction (both, and argmax_in_graph): {"labels": the HxW uint8 label map at the original
size}. Metric (both): mmseg IoUMetric, dataset-level, 21 classes, ignore 255
(zoo.metrics.segmentation.DatasetIoU). Data: the VOC family (zoo.datasets.voc), val.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from zoo.datasets.voc import CLASSES
from zoo.errors import ZooError
from zoo.metrics.segmentation import DatasetIoU
from zoo.mm import OpenMMLabAdapter, imnormalize, imrescale_size, letterbox_input

CONFIG = "fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py"


# ----------------------------------------------------------------------------- preprocessing

def guide_geometry(w: int, h: int, size: int) -> dict:
    """The guide's letterbox numbers for a w x h image and a size x size input."""
    scale = min(size / w, size / h)
    new_w, new_h = int(math.floor(w * scale)), int(math.floor(h * scale))
    return {"scale": scale, "new_w": new_w, "new_h": new_h,
            "pad_left": (size - new_w) // 2, "pad_top": (size - new_h) // 2,
            # the postprocess recomputes the pads from the unrounded size (float floor division)
            "crop_left": int((size - w * scale) // 2), "crop_top": int((size - h * scale) // 2)}


def guide_input(bgr: np.ndarray, size: int) -> tuple[np.ndarray, dict]:
    h, w = bgr.shape[:2]
    g = guide_geometry(w, h, size)
    return letterbox_input(bgr, size, g), g


def rescale_size(w: int, h: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(w, h) after mmseg's Resize(scale=scale, keep_ratio=True) (the config's (2048, 512))."""
    return imrescale_size(w, h, scale)[:2]


def upstream_input(bgr: np.ndarray, scale: tuple[int, int]) -> np.ndarray:
    h, w = bgr.shape[:2]
    img = cv2.resize(bgr, rescale_size(w, h, scale), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(imnormalize(img).transpose(2, 0, 1))


# ----------------------------------------------------------------------------- postprocessing

def guide_restore(lab: np.ndarray, geo: dict, h: int, w: int) -> np.ndarray:
    """A size x size label map -> the guide's crop -> bilinear resize of the label map (as float,
    align_corners False) to h x w -> truncation to int32 (FCN-8s_postprocess.py)."""
    import torch
    import torch.nn.functional as F
    size = lab.shape[-1]
    lab = lab[geo["crop_top"]:size - geo["crop_top"], geo["crop_left"]:size - geo["crop_left"]]
    t = torch.from_numpy(np.ascontiguousarray(lab, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0].to(torch.int32).numpy()


def guide_prediction(logits: np.ndarray, geo: dict, h: int, w: int) -> np.ndarray:
    return guide_restore(logits.argmax(0), geo, h, w)


def upstream_prediction(logits: np.ndarray, h: int, w: int) -> np.ndarray:
    """Logits resized bilinearly (align_corners False) to h x w, then argmax."""
    import torch
    import torch.nn.functional as F
    t = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))[None]
    if t.shape[-2:] != (h, w):
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    return t[0].argmax(0).numpy()


# ----------------------------------------------------------------------------- the network

class FcnExport:
    """Factory of the exported module (built lazily so the file imports without torch/mmseg)."""

    @staticmethod
    def wrap(segmentor, argmax: bool):
        import torch
        import torch.nn.functional as F

        class FcnForward(torch.nn.Module):
            """mmseg EncoderDecoder.encode_decode on a batch whose img_shape is the input's own:
            backbone -> FCNHead logits at 1/8 -> bilinear resize to the input size (align_corners
            False); `argmax` appends the guide's in-graph argmax (int64 [N, 1, H, W])."""

            def __init__(self, seg):
                super().__init__()
                self.seg = seg
                self.argmax = argmax

            def forward(self, x):
                logits = self.seg.decode_head(self.seg.extract_feat(x))
                logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear",
                                       align_corners=self.seg.decode_head.align_corners)
                return logits.argmax(1, keepdim=True) if self.argmax else logits

        return FcnForward(segmentor)


class FCN8sAdapter(OpenMMLabAdapter):
    inner = "seg"  # the OpenMMLab model inside the export wrapper
    @property
    def protocol(self) -> str:
        return self.options["protocol"]  # guide or upstream: checked against its declaration

    @property
    def dynamic_spatial(self) -> bool:  # the upstream protocol keeps each image's size
        return self.protocol == "upstream"

    def build(self):
        from zoo.mm import build_model, load_config
        if self.options["argmax_in_graph"] and self.protocol != "guide":
            raise ZooError("fcn8s: argmax_in_graph=true needs protocol=guide (upstream resizes the logits, not labels)")
        cfg = load_config("mmseg", CONFIG)
        seg = build_model("mmseg", cfg)
        return FcnExport.wrap(seg, self.options["argmax_in_graph"])

    def preprocess(self, sample):
        img = sample.image
        h, w = img.shape[:2]
        if self.protocol == "guide":
            x, geo = guide_input(img, self.size)
            return x, (h, w, geo)
        return upstream_input(img, tuple(self.manifest.preprocess["upstream_scale"])), (h, w, None)

    def postprocess(self, output, meta) -> dict:
        h, w, geo = meta
        if self.options["argmax_in_graph"]:  # the guide's graph: int64 [1, 500, 500] labels
            labels = guide_restore(output[0], geo, h, w)
        elif self.protocol == "guide":
            labels = guide_prediction(output, geo, h, w)
        else:
            labels = upstream_prediction(output, h, w)
        return {"labels": labels.astype(np.uint8)}  # class indices 0..20

    def metrics(self, source):
        ref = self.manifest.reference["protocols"][self.protocol]
        return [DatasetIoU(self.protocol, ref["description"], CLASSES)]
