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
  1. cv2 BGR -> mmcv.imrescale to (2048, 512) (short side 512 for VOC's <= 500 px images),
     int(x*scale + 0.5), cv2 bilinear -> normalisation; no padding: every image keeps its own
     size (dynamic height/width, batch 1);
  2. the graph as above, at the input's size;
  3. logits resized bilinearly to h x w, then argmax (mmseg's `postprocess_result`).
Metric (both): mmseg IoUMetric, dataset-level, 21 classes, ignore 255 (zoo.metrics.DatasetIoU).
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from zoo.adapter import Dataset, ModelAdapter
from zoo.errors import ZooError, one_line
from zoo.fileutil import text_sha256
from zoo.ids import read_ids, shown
from zoo.images import check_pixels, imread, uint8_values
from zoo.metrics import DatasetIoU
from zoo.mm import imnormalize, imrescale_size, letterbox_input
from zoo.weights import load_strict

CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
           "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
           "train", "tvmonitor")
IGNORE = 255
CONFIG = "fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py"
PROTOCOLS = ("guide", "upstream")
UPSTREAM_SCALE = (2048, 512)  # mmseg Resize(scale=(2048, 512), keep_ratio=True)


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


def rescale_size(w: int, h: int, scale: tuple[int, int] = UPSTREAM_SCALE) -> tuple[int, int]:
    """(w, h) after mmseg's Resize(scale=(2048, 512), keep_ratio=True)."""
    return imrescale_size(w, h, scale)[:2]


def upstream_input(bgr: np.ndarray) -> np.ndarray:
    h, w = bgr.shape[:2]
    img = cv2.resize(bgr, rescale_size(w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(imnormalize(img).transpose(2, 0, 1))


def read_voc_label(path: Path, num_classes: int = len(CLASSES)) -> np.ndarray:
    """A SegmentationClass palette PNG -> class indices (uint8 HxW). Values other than
    0..num_classes-1 and 255 (the border) are a one-line ZooError naming the file."""
    from PIL import Image
    check_pixels(path)  # a huge declared size: refused from the header, before PIL allocates
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ZooError(f"{shown(path)}: label must be a palette (P) or greyscale (L) PNG of class indices, "
                               f"got mode {im.mode}")
            lab = np.array(im)
    except FileNotFoundError:
        raise ZooError(f"{shown(path)}: label not found") from None
    except ZooError:
        raise
    except Exception as exc:
        raise ZooError(f"{shown(path)}: unreadable label ({one_line(exc)[:200]})") from None
    bad = np.setdiff1d(uint8_values(lab), np.r_[np.arange(num_classes), IGNORE])
    if bad.size:
        raise ZooError(f"{shown(path)}: unexpected label values {bad[:10].tolist()} (expected 0..{num_classes - 1} and {IGNORE})")
    return lab.astype(np.uint8)


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


def labels_from_output(out: np.ndarray) -> bool:
    """True when the graph already holds the argmax (the guide's int64 [1, H, W] map)."""
    return out.ndim == 3 and out.shape[0] == 1 and np.issubdtype(out.dtype, np.integer)


# ----------------------------------------------------------------------------- dataset

class VocSegVal(Dataset):
    """VOCdevkit/VOC2012: JPEGImages/<id>.jpg, SegmentationClass/<id>.png, ids from
    ImageSets/Segmentation/val.txt (1449) unless an ids file is given."""

    name = "voc2012"

    def __init__(self, root: Path, ids_file: Path | None, limit: int | None, expected: int | None,
                 builtin: bool, protocol: str, size: int):
        root = Path(root)
        if not root.is_dir():
            raise ZooError(f"{shown(root)}: dataset folder not found")
        self.voc = root / "VOC2012" if (root / "VOC2012").is_dir() else root
        if not (self.voc / "JPEGImages").is_dir():
            raise ZooError(f"{shown(root)}: not a VOCdevkit (no VOC2012/JPEGImages)")
        self.root, self.limit, self.expected, self.builtin = root, limit, expected, builtin
        self.ids_file = Path(ids_file) if ids_file else self.voc / "ImageSets" / "Segmentation" / "val.txt"
        ids = read_ids(self.ids_file)  # plain names (no separators, NUL or absolute path), UTF-8
        self.ids = ids[:limit] if limit is not None else ids
        self.protocol, self.size = protocol, size
        for sid in self.ids:  # fail before any work when a listed file is missing
            for p in (self.image_path(sid), self.label_path(sid)):
                if not p.is_file():
                    raise ZooError(f"{shown(p)}: listed in {shown(self.ids_file)} but missing")

    def image_path(self, sid: str) -> Path:
        return self.voc / "JPEGImages" / f"{sid}.jpg"

    def label_path(self, sid: str) -> Path:
        return self.voc / "SegmentationClass" / f"{sid}.png"

    def read(self, sid: str):
        img = imread(self.image_path(sid), cv2.IMREAD_COLOR)
        lab = read_voc_label(self.label_path(sid))
        if lab.shape != img.shape[:2]:
            raise ZooError(f"{shown(self.label_path(sid))}: label is {lab.shape[1]}x{lab.shape[0]}, its image is "
                           f"{img.shape[1]}x{img.shape[0]}")
        return img, lab

    def preprocess(self, raw):
        img, lab = raw
        h, w = img.shape[:2]
        if self.protocol == "guide":
            x, geo = guide_input(img, self.size)
            return x, (lab, h, w, geo)
        return upstream_input(img), (lab, h, w, None)

    def provenance(self) -> dict:
        step = (f"streamed; guide: keep-ratio resize into {self.size}x{self.size} (floor), RGB mean/std, centre "
                f"zero pad" if self.protocol == "guide" else
                "streamed; upstream: mmcv.imrescale to (2048, 512), RGB mean/std, no padding (own size, batch 1)")
        return {"name": self.name, "path": str(self.root), "split": "val", "ids_file": str(self.ids_file),
                "num_samples": len(self.ids), "expected_samples": self.expected,
                "ids_sha256": text_sha256("\n".join(self.ids)), "limit": self.limit, "builtin": self.builtin,
                "preparation": {"step": step, "protocol": self.protocol}}


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


class FCN8sAdapter(ModelAdapter):
    @property
    def protocol(self) -> str:
        return self.options["protocol"]  # one of PROTOCOLS: checked against its declaration

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

    def checkpoint_payload(self, module) -> dict:
        return {"meta": {"note": "written by the zoo"}, "state_dict": module.seg.state_dict()}

    def load_weights(self, module, path: Path) -> None:
        from zoo.mm import checkpoint_state_dict
        sd, _meta = checkpoint_state_dict(path)
        load_strict(module.seg, sd, path)

    def dataset(self, data, ids_file, limit, cache):
        d = self.manifest.data
        builtin = data is None
        if builtin:
            data = self.manifest.dir / d["builtin"]["path"]
            ids_file = ids_file or self.manifest.dir / d["builtin"]["ids_file"]
        return VocSegVal(Path(data), ids_file, limit, None if builtin else d["expected_samples"], builtin,
                         self.protocol, self.manifest.input["shape"][-1])

    def metrics(self):
        ref = self.manifest.reference["protocols"][self.protocol]

        def post(out, target):
            lab, h, w, geo = target
            if labels_from_output(out):  # argmax_in_graph: the guide's int64 label map
                return guide_restore(out[0], geo, h, w), lab
            if self.protocol == "guide":
                return guide_prediction(out, geo, h, w), lab
            return upstream_prediction(out, h, w), lab

        return [DatasetIoU(self.protocol, ref["description"], CLASSES, post)]

    def decision(self, outputs):
        return outputs if labels_from_output(outputs[0]) else outputs.argmax(1)
