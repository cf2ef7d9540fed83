"""PASCAL VOC2012 semantic segmentation, read in the dataset's own layout:

  VOCdevkit/VOC2012/JPEGImages/<id>.jpg                 the image (decoded BGR)
  VOCdevkit/VOC2012/SegmentationClass/<id>.png          class indices as a palette (or greyscale)
                                                        PNG: 0..20, 255 on object borders
  VOCdevkit/VOC2012/ImageSets/Segmentation/<name>.txt   the ids of a split (train, val: 1449 ids)

The root may be the VOCdevkit folder or its VOC2012 folder. The ids come from the run's or the
split's declared ids file, else from the split's ImageSets file (the split's `name`). Labels are
the palette indices as stored (no colour decoding); any value other than a class index or 255 is
refused, naming the file."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from zoo.datasets.base import Opened, Sample, Source
from zoo.errors import ZooError, one_line
from zoo.ids import read_ids, shown
from zoo.images import check_pixels, imread, uint8_values

CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
           "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
           "train", "tvmonitor")
IGNORE = 255


def read_label(path: Path, num_classes: int = len(CLASSES)) -> np.ndarray:
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
        raise ZooError(f"{shown(path)}: unexpected label values {bad[:10].tolist()} (expected 0..{num_classes - 1} "
                       f"and {IGNORE})")
    return lab.astype(np.uint8)


class VOCSegmentation(Source):
    """A VOC2012 segmentation split: Sample.image BGR uint8, Sample.label the class indices (uint8,
    255 = border), Sample.info {"image", "label"} (the two files)."""

    family = "voc"
    splits_share_files = True

    @classmethod
    def listing(cls, root: Path, split: dict) -> Path | None:
        voc = root / "VOC2012" if (root / "VOC2012").is_dir() else root
        return voc / "ImageSets" / "Segmentation" / f"{split['name']}.txt" if split.get("name") else None

    def __init__(self, opened: Opened, ids: list[str], voc: Path, listing: Path):
        super().__init__(opened, ids)
        self.voc = voc
        self.listing = listing  # the file the ids came from (the ids file, else the ImageSets file)

    @classmethod
    def open(cls, opened: Opened, split_spec: dict, settings: dict, cache: Path) -> "VOCSegmentation":
        root = opened.root
        voc = root / "VOC2012" if (root / "VOC2012").is_dir() else root
        if not (voc / "JPEGImages").is_dir():
            raise ZooError(f"{shown(root)}: not a VOCdevkit (no VOC2012/JPEGImages)")
        listing = opened.ids_file
        if listing is None:  # the split's own listing
            if not split_spec.get("name"):
                raise ZooError(f"{shown(root)}: the split has no name, so no ImageSets/Segmentation file to read "
                               f"(declare one, or give an ids file)")
            listing = voc / "ImageSets" / "Segmentation" / f"{split_spec['name']}.txt"
        ids = opened.limited(read_ids(listing))  # plain names (no separators, NUL or absolute path), UTF-8
        source = cls(opened, ids, voc, listing)
        for sid in ids:  # fail before any work when a listed file is missing
            for p in (source.image_path(sid), source.label_path(sid)):
                if not p.is_file():
                    raise ZooError(f"{shown(p)}: listed in {shown(listing)} but missing")
        return source

    def image_path(self, sid: str) -> Path:
        return self.voc / "JPEGImages" / f"{sid}.jpg"

    def label_path(self, sid: str) -> Path:
        return self.voc / "SegmentationClass" / f"{sid}.png"

    def read(self, sid: str) -> Sample:
        img = imread(self.image_path(sid), cv2.IMREAD_COLOR)
        s = self.read_label(sid)
        if s.label.shape != img.shape[:2]:
            raise ZooError(f"{shown(self.label_path(sid))}: label is {s.label.shape[1]}x{s.label.shape[0]}, its image "
                           f"is {img.shape[1]}x{img.shape[0]}")
        return Sample(sid, img, s.label, s.info)

    def read_label(self, sid: str) -> Sample:
        info = {"image": str(self.image_path(sid)), "label": str(self.label_path(sid))}
        return Sample(sid, None, read_label(self.label_path(sid)), info)

    def preparation(self) -> dict:
        return {"step": "none: streamed from the original files", "ids_from": str(self.listing),
                "labels": "SegmentationClass palette indices as stored (0..20, 255 ignored)"}
