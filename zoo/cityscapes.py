"""Cityscapes in its real layout, shared by every Cityscapes model (ErfNet, Fast-SCNN).

  <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
  <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png

Images and labels are paired by name, never by sort position. The labelId -> trainId table
(cityscapesScripts `labels.py`, the 19 evaluated classes) lives here and only here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from zoo.errors import ZooError
from zoo.ids import is_utf8_name, name_problem, shown
from zoo.images import imread, uint8_values

CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
           "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
           "motorcycle", "bicycle")
IGNORE = 255
# labelId -> trainId for the 19 evaluated classes; every other labelId (0-6, 9, 10, 14-16, 18,
# 29, 30, -1 licence plate) is ignored.
LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                  25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
# The labelIds a *_gtFine_labelIds.png can hold: cityscapesScripts' table, 0..33, and its -1
# (licence plate), which a uint8 file holds as 255 (ignored, as upstream's -1); any other value
# (34..254) is not a Cityscapes label.
MAX_LABEL_ID = 33
LICENSE_PLATE_U8 = 255

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_KINDS = {"labelIds": "_gtFine_labelIds.png", "labelTrainIds": "_gtFine_labelTrainIds.png"}


def train_id_lut(ignore: int = IGNORE) -> np.ndarray:
    """256-entry uint8 lookup table labelId -> trainId (ignore elsewhere)."""
    lut = np.full(256, ignore, dtype=np.uint8)
    for label_id, train_id in LABEL_TO_TRAIN.items():
        lut[label_id] = train_id
    return lut


def to_train_ids(label_ids: np.ndarray, ignore: int = IGNORE) -> np.ndarray:
    if label_ids.dtype != np.uint8:
        raise ValueError(f"labelIds must be uint8, got {label_ids.dtype}")
    return train_id_lut(ignore)[label_ids]


@dataclass(frozen=True)
class Sample:
    name: str            # <city>_<seq>_<frame>
    city: str
    image: Path
    labels: dict         # kind ("labelIds"/"labelTrainIds") -> Path, only those that exist


def find_samples(root: Path, split: str = "val", order: list[str] | None = None,
                 ids_file: Path | None = None) -> list[Sample]:
    """Every image of the split (sorted by city then name, or in `order` given as sample names,
    read from `ids_file`, which error messages name), with whatever label files exist beside it.
    An image with no label at all, an image whose file name is not UTF-8 (its name becomes the
    sample id), and an ordered name with no image are errors."""
    root = Path(root)
    if not root.is_dir():
        raise ZooError(f"{shown(root)}: data folder not found")
    img_dir = root / "leftImg8bit" / split
    if not img_dir.is_dir():
        raise ZooError(f"{shown(root)}: not a Cityscapes folder (expected {shown(img_dir)}/<city>/*{IMAGE_SUFFIX})")
    source = shown(ids_file) if ids_file else "the order"
    if order is not None:
        for n in order:
            problem = name_problem(n)
            if problem:
                raise ZooError(f"{source}: sample name {n!r} {problem}")
        if len(set(order)) != len(order):
            dup = next(n for n in order if order.count(n) > 1)
            raise ZooError(f"{source}: sample {dup} is listed twice in the order")
    wanted = set(order) if order is not None else None
    samples = {}
    for img in sorted(img_dir.glob(f"*/*{IMAGE_SUFFIX}")):
        name, city = img.name[: -len(IMAGE_SUFFIX)], img.parent.name
        if not is_utf8_name(img.relative_to(img_dir)):
            if wanted is None:  # (a listed name is UTF-8 text: such a file is never one of them)
                raise ZooError(f"{shown(img)}: file name is not UTF-8 (its name would be a sample id): "
                               "rename it or leave it out with --ids-file")
            continue
        if wanted is not None and name not in wanted:
            continue
        gt = root / "gtFine" / split / city
        labels = {k: gt / f"{name}{suf}" for k, suf in LABEL_KINDS.items() if (gt / f"{name}{suf}").is_file()}
        if not labels:
            raise ZooError(f"{shown(img)}: no label for this image (expected "
                           f"{shown(gt / (name + LABEL_KINDS['labelTrainIds']))} or {LABEL_KINDS['labelIds']})")
        samples[name] = Sample(name, city, img, labels)
    if order is not None:
        missing = [n for n in order if n not in samples]
        if missing:
            listed = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            raise ZooError(f"{source}: {len(missing)} of {len(order)} listed samples have no image "
                           f"{shown(img_dir)}/<city>/<name>{IMAGE_SUFFIX}: {listed}")
        return [samples[n] for n in order]
    if not samples:
        raise ZooError(f"{shown(img_dir)}: no *{IMAGE_SUFFIX} images")
    return list(samples.values())


def read_png(path: Path) -> np.ndarray:
    """A label or image PNG as stored (no colour conversion)."""
    return imread(path, cv2.IMREAD_UNCHANGED)


def read_train_ids(sample: Sample, prefer: str = "labelTrainIds") -> tuple[np.ndarray, str]:
    """The label as trainIds (uint8, 255 = ignore) and which file it came from. `prefer` picks
    the file kind when both exist; labelIds are mapped through LABEL_TO_TRAIN (the same mapping
    cityscapesScripts uses to write labelTrainIds)."""
    if prefer not in LABEL_KINDS:
        raise ValueError(f"prefer must be one of {sorted(LABEL_KINDS)}, got {prefer!r}")
    kinds = [prefer] + [k for k in LABEL_KINDS if k != prefer]
    for kind in kinds:
        path = sample.labels.get(kind)
        if path is None:
            continue
        lab = read_png(path)
        if lab.ndim != 2 or lab.dtype != np.uint8:
            raise ZooError(f"{shown(path)}: expected a single-channel 8-bit label image, got shape {lab.shape} {lab.dtype}")
        values = uint8_values(lab)
        if kind == "labelIds":
            bad = values[(values > MAX_LABEL_ID) & (values != LICENSE_PLATE_U8)]
            if bad.size:
                raise ZooError(f"{shown(path)}: labelId values {bad[:5].tolist()} are outside the Cityscapes label "
                               f"table (0-{MAX_LABEL_ID}, and 255 for its -1)")
            return to_train_ids(lab), kind
        bad = np.setdiff1d(values, np.r_[np.arange(len(CLASSES)), IGNORE])
        if bad.size:
            raise ZooError(f"{shown(path)}: unexpected trainId values {bad[:5].tolist()} (allowed 0-18 and 255)")
        return lab, kind
    raise ZooError(f"{shown(sample.image)}: no label file")  # find_samples guarantees one exists
