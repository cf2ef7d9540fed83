"""Cityscapes in its real layout, shared by every Cityscapes model (ErfNet, Fast-SCNN).

  <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
  <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png

Images and labels are paired by name, never by sort position. The ids are the sample names
`<city>_<seq>_<frame>`, sorted by city then name unless an ids file gives an order (the names, or
the Ascend guides' `sort.log` lines `<dir>/<name>_leftImg8bit.png`). The labelId -> trainId table
(cityscapesScripts `labels.py`, the 19 evaluated classes) lives here and only here.

A sample's image is the PIL image converted to RGB (upstream's reader in both models), its label
the trainIds (uint8, 255 = ignored) of the label file the manifest prefers (`data.source.labels`:
labelTrainIds or labelIds; the other kind when a sample has only that one). Nothing is prepared:
every sample is read from the original files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from zoo.datasets.base import Opened, Sample, Source
from zoo.errors import ZooError, one_line
from zoo.ids import is_utf8_name, name_problem, read_ids, shown
from zoo.images import check_pixels, header_size, imread, uint8_values

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
DERIVED = "labelIds (trainIds derived)"   # how the record counts samples read from labelIds


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


def sample_name(line: str) -> str:
    """`<city>_<seq>_<frame>` from a name or the guide's sort.log form `<dir>/<name>_leftImg8bit.png`
    (a file name: its folder is dropped). Any other line is the name itself (an id with a path in
    it is refused by the ids reader)."""
    for suffix in (IMAGE_SUFFIX, ".png"):
        if line.endswith(suffix):
            return line.replace("\\", "/").rsplit("/", 1)[-1][: -len(suffix)]
    return line


def read_order(path: Path) -> list[str]:
    """Sample names in order, one a line: `<city>_<seq>_<frame>`, or the guide's sort.log form
    `<name>_leftImg8bit.png` (a leading folder is dropped). Blank lines and `#` comments skipped."""
    return read_ids(path, sample_name)


@dataclass(frozen=True)
class Files:
    """One sample's files."""
    name: str            # <city>_<seq>_<frame>
    city: str
    image: Path
    labels: dict         # kind ("labelIds"/"labelTrainIds") -> Path, only those that exist

    def label_kind(self, prefer: str) -> str:
        """The kind read for this sample: `prefer` when it exists, else the other one."""
        return prefer if prefer in self.labels else next(k for k in LABEL_KINDS if k in self.labels)


def find_files(root: Path, split: str = "val", order: list[str] | None = None,
               ids_file: Path | None = None, limit: int | None = None) -> list[Files]:
    """Every image of the split (sorted by city then name, or in `order` given as sample names,
    read from `ids_file`, which error messages name), the first `limit` of them, with whatever
    label files exist beside each. The limit cuts the ids before any file of theirs is checked.
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
        order = order[:limit] if limit is not None else order
    wanted = set(order) if order is not None else None
    images = {}
    for img in sorted(img_dir.glob(f"*/*{IMAGE_SUFFIX}")):
        name = img.name[: -len(IMAGE_SUFFIX)]
        if not is_utf8_name(img.relative_to(img_dir)):
            if wanted is None:  # (a listed name is UTF-8 text: such a file is never one of them)
                raise ZooError(f"{shown(img)}: file name is not UTF-8 (its name would be a sample id): "
                               "rename it or leave it out with --ids-file")
            continue
        if wanted is None or name in wanted:
            images[name] = img
    if order is not None:
        missing = [n for n in order if n not in images]
        if missing:
            listed = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            raise ZooError(f"{source}: {len(missing)} of {len(order)} listed samples have no image "
                           f"{shown(img_dir)}/<city>/<name>{IMAGE_SUFFIX}: {listed}")
        names = order
    else:
        if not images:
            raise ZooError(f"{shown(img_dir)}: no *{IMAGE_SUFFIX} images")
        names = list(images)[:limit] if limit is not None else list(images)
    out = []
    for name in names:
        img = images[name]
        city = img.parent.name
        gt = root / "gtFine" / split / city
        labels = {k: gt / f"{name}{suf}" for k, suf in LABEL_KINDS.items() if (gt / f"{name}{suf}").is_file()}
        if not labels:
            raise ZooError(f"{shown(img)}: no label for this image (expected "
                           f"{shown(gt / (name + LABEL_KINDS['labelTrainIds']))} or {LABEL_KINDS['labelIds']})")
        out.append(Files(name, city, img, labels))
    return out


def read_png(path: Path) -> np.ndarray:
    """A label or image PNG as stored (no colour conversion)."""
    return imread(path, cv2.IMREAD_UNCHANGED)


def read_train_ids(files: Files, prefer: str = "labelTrainIds") -> tuple[np.ndarray, str]:
    """The label as trainIds (uint8, 255 = ignore) and which file kind it came from. `prefer`
    picks the kind when both exist; labelIds are mapped through LABEL_TO_TRAIN (the same mapping
    cityscapesScripts uses to write labelTrainIds)."""
    if prefer not in LABEL_KINDS:
        raise ValueError(f"prefer must be one of {sorted(LABEL_KINDS)}, got {prefer!r}")
    kind = files.label_kind(prefer)
    path = files.labels[kind]
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


def _unreadable(path: Path, exc: Exception) -> ZooError:
    if isinstance(exc, FileNotFoundError):
        return ZooError(f"{shown(path)}: image not found")
    return ZooError(f"{shown(path)}: unreadable or truncated image ({one_line(exc)[:200]})")


def open_rgb(path: Path):
    """PIL Image.open(path).convert('RGB'), decoded now (upstream's reader); a missing,
    unreadable, truncated or oversized file is a one-line ZooError naming it."""
    from PIL import Image
    check_pixels(path)  # a huge declared size: refused from the header, before PIL allocates
    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # forces the full decode
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib errors... for bad files
        raise _unreadable(path, exc) from None


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header (PNG/JPEG, else what PIL reads before decoding)."""
    check_pixels(path)
    size = header_size(path)
    if size is None:
        from PIL import Image
        try:
            with Image.open(path) as img:
                size = img.size
        except Exception as exc:
            raise _unreadable(path, exc) from None
    return size[1], size[0]


class Cityscapes(Source):
    """A Cityscapes split in its real layout, streamed from the original files."""

    family = "cityscapes"

    def __init__(self, opened: Opened, files: list[Files], prefer: str):
        super().__init__(opened, [f.name for f in files])
        self.files = {f.name: f for f in files}
        self.prefer = prefer

    @classmethod
    def open(cls, opened: Opened, split_spec: dict, settings: dict, cache: Path) -> "Cityscapes":
        prefer = settings.get("labels", "labelTrainIds")
        if prefer not in LABEL_KINDS:
            raise ZooError(f"data.source.labels must be one of {', '.join(LABEL_KINDS)}, got {prefer!r}")
        split = opened.name or "val"   # the folder under leftImg8bit/ and gtFine/
        order = read_order(opened.ids_file) if opened.ids_file else None
        return cls(opened, find_files(opened.root, split, order, opened.ids_file, opened.limit), prefer)

    def _files(self, sample_id: str) -> Files:
        try:
            return self.files[sample_id]
        except KeyError:
            raise ZooError(f"cityscapes: no sample {sample_id!r} in {shown(self.root)}") from None

    def _label(self, files: Files, width: int, height: int) -> tuple[np.ndarray, dict]:
        train_ids, kind = read_train_ids(files, self.prefer)
        h, w = train_ids.shape
        if (w, h) != (width, height):
            raise ZooError(f"{shown(files.labels[kind])}: label is {w}x{h}, its image {shown(files.image.name)} is "
                           f"{width}x{height}")
        return train_ids, {"city": files.city, "image": str(files.image), "label": str(files.labels[kind]),
                           "label_kind": kind, "size": (height, width)}

    def read(self, sample_id: str) -> Sample:
        """The PIL RGB image and the trainIds of one sample (the label must have the image's size)."""
        files = self._files(sample_id)
        img = open_rgb(files.image)
        label, info = self._label(files, *img.size)
        return Sample(sample_id, img, label, info)

    def read_label(self, sample_id: str) -> Sample:
        """The trainIds only: the image's size is read from its header, the image is not decoded."""
        files = self._files(sample_id)
        h, w = image_size(files.image)
        label, info = self._label(files, w, h)
        return Sample(sample_id, None, label, info)

    def image_sizes(self) -> dict[tuple[int, int], Path]:
        """Each distinct (height, width) of the images, in id order, with the first image of that
        size (from the headers: nothing is decoded)."""
        sizes: dict[tuple[int, int], Path] = {}
        for sid in self.ids:
            sizes.setdefault(image_size(self.files[sid].image), self.files[sid].image)
        return sizes

    @property
    def order(self) -> str:
        """How the ids are ordered, in words."""
        o = self.opened
        text = f"as listed in {shown(o.ids_file)}" if o.ids_file else "sorted by city then name"
        return text + (f", first {o.limit}" if o.limit is not None else "")

    def preparation(self) -> dict:
        kinds = {"labelTrainIds": 0, DERIVED: 0}
        for sid in self.ids:
            kind = self.files[sid].label_kind(self.prefer)
            kinds["labelTrainIds" if kind == "labelTrainIds" else DERIVED] += 1
        return {"step": "none: streamed from the original files; images read with PIL (RGB), labels as "
                        "trainIds (labelIds mapped with the cityscapesScripts table, unmapped ids -> 255 ignored)",
                "order": self.order,
                "image_sizes": [list(s) for s in self.image_sizes()],
                "labels_preferred": self.prefer, "labels": kinds,
                "label_files": {k: f"*{v}" for k, v in LABEL_KINDS.items()}}
