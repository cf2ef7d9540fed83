"""COCO object detection, read in the dataset's own layout:

  ROOT/<name>/<file_name>                      the images of split <name> (val2017: <12-digit id>.jpg)
  ROOT/annotations/instances_<name>.json       their instances (boxes, categories, sizes)

The split's `name` gives both (val2017). The ids come from the run's or the split's declared ids
file (image ids or file names, one a line), else from the annotation file's image order (mmdet's
CocoDataset order). The annotation file is checked before use (`check_instances`: one-line errors
naming the file and the entry) and must hold the 80 COCO categories; the source keeps its
pycocotools index (`coco`), which the COCO metric (zoo.metrics.coco) evaluates against."""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import cv2

from zoo.datasets.base import Opened, Sample, Source
from zoo.errors import ZooError, one_line
from zoo.ids import is_utf8_name, name_problem, path_inside, read_id_lines, shown
from zoo.images import imread

# mmdet CocoDataset's 80 classes, in label order (label i <-> the i-th category id, sorted).
CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush")
CAT_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31,
           32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
           58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87,
           88, 89, 90)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _entries(data: dict, key: str, where: str) -> list:
    if key not in data:
        raise ZooError(f"{where}: no {key!r} list")
    entries = data[key]
    if not isinstance(entries, list):
        raise ZooError(f"{where}: {key!r} must be a list, got {type(entries).__name__}")
    return entries


def _check_ids(entries: list, key: str, where: str) -> None:
    """Every entry an object with an integer 'id', no id twice (pycocotools indexes by id: a
    second entry with the same id would silently replace the first)."""
    seen: dict[int, int] = {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise ZooError(f"{where}: {key}[{i}] is not an object")
        if "id" not in e:
            raise ZooError(f"{where}: {key}[{i}] has no 'id'")
        if not _is_int(e["id"]):
            raise ZooError(f"{where}: {key}[{i}] has 'id' {e['id']!r}, not an integer")
        if e["id"] in seen:
            raise ZooError(f"{where}: {key}[{seen[e['id']]}] and {key}[{i}] have the same id {e['id']}")
        seen[e["id"]] = i


def check_instances(data, where: str) -> None:
    """The parts of an instances JSON the reader, pycocotools' evaluation and the results rely
    on; anything missing or of the wrong type is a one-line ZooError naming the file (`where`)
    and the entry. Image file names must stay inside the images folder."""
    if not isinstance(data, dict):
        raise ZooError(f"{where}: not a COCO instances file (the top level is not a JSON object)")
    images = _entries(data, "images", where)
    anns = _entries(data, "annotations", where)
    cats = _entries(data, "categories", where)
    for key, entries in (("images", images), ("annotations", anns), ("categories", cats)):
        _check_ids(entries, key, where)
    for i, img in enumerate(images):
        entry = f"images[{i}] (id {img['id']})"
        for k in ("file_name", "width", "height"):
            if k not in img:
                raise ZooError(f"{where}: {entry} has no {k!r}")
        for k in ("width", "height"):
            if not _is_int(img[k]) or img[k] < 1:
                raise ZooError(f"{where}: {entry} has {k!r} {img[k]!r}, not a positive integer")
        name = img["file_name"]
        if not isinstance(name, str) or not name:
            raise ZooError(f"{where}: {entry} has 'file_name' {name!r}, not a file name")
        if not is_utf8_name(name):
            raise ZooError(f"{where}: {entry} has a 'file_name' that is not valid Unicode ({shown(name)})")
        if path_inside(Path("images"), name) is None or "\\" in name:
            raise ZooError(f"{where}: {entry} has 'file_name' {name!r}, which leaves the images folder "
                           "(absolute, '..', NUL byte or backslash)")
    for i, ann in enumerate(anns):
        entry = f"annotations[{i}] (id {ann['id']})"
        for k in ("image_id", "category_id", "bbox", "area", "iscrowd"):
            if k not in ann:
                raise ZooError(f"{where}: {entry} has no {k!r}")
        for k in ("image_id", "category_id"):
            if not _is_int(ann[k]):
                raise ZooError(f"{where}: {entry} has {k!r} {ann[k]!r}, not an integer")
        box = ann["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            raise ZooError(f"{where}: {entry} has 'bbox' {str(box)[:80]}, not [x, y, width, height] numbers")
        if not _is_number(ann["area"]):
            raise ZooError(f"{where}: {entry} has 'area' {str(ann['area'])[:80]}, not a number")
        if ann["iscrowd"] not in (0, 1):
            raise ZooError(f"{where}: {entry} has 'iscrowd' {ann['iscrowd']!r}, not 0 or 1")
    for i, cat in enumerate(cats):
        if not isinstance(cat.get("name"), str):
            raise ZooError(f"{where}: categories[{i}] (id {cat['id']}) has no 'name' string")


def load_coco(ann_file: Path):
    """pycocotools COCO of an instances JSON, checked first (check_instances); a missing,
    unreadable or malformed file is a one-line error naming it."""
    from pycocotools.coco import COCO
    ann_file = Path(ann_file)
    where = shown(ann_file)
    if not ann_file.is_file():
        raise ZooError(f"{where}: annotation file not found")
    try:
        data = json.loads(ann_file.read_bytes())
    except OSError as exc:
        raise ZooError(f"{where}: cannot read ({exc.strerror})") from None
    except (ValueError, RecursionError) as exc:  # JSON syntax, not UTF-8/16/32 text, nesting
        raise ZooError(f"{where}: not a COCO instances file ({one_line(exc)[:200]})") from None
    check_instances(data, where)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()  # pycocotools' own index over the checked dataset (as its loadRes builds one)
            coco.dataset = data
            coco.createIndex()
    except Exception as exc:
        raise ZooError(f"{where}: not a COCO instances file ({one_line(exc)[:200]})") from None
    cats = sorted(coco.getCatIds())
    if tuple(cats) != CAT_IDS:
        raise ZooError(f"{where}: expected the 80 COCO categories (ids 1..90), got {len(cats)} ids")
    names = tuple(c["name"] for c in coco.loadCats(cats))
    if names != CLASSES:
        bad = next(i for i, (a, b) in enumerate(zip(names, CLASSES)) if a != b)
        raise ZooError(f"{where}: category {cats[bad]} is {names[bad]!r}, expected {CLASSES[bad]!r}")
    return coco


def parse_image_id(text: str) -> int:
    """An ids-file entry: an image id ('397133') or a plain file name ('000000397133.jpg');
    anything else (a path, a non-ASCII-digit or signed number) is a ZooError."""
    text = text.strip()
    problem = name_problem(text)
    if problem:
        raise ZooError(f"COCO image {text!r} {problem}")
    stem = text.rsplit(".", 1)[0] if "." in text else text
    if not (stem.isascii() and stem.isdigit()):
        raise ZooError(f"not a COCO image id or file name: {text!r}")
    return int(stem)


class CocoDetection(Source):
    """A COCO split: Sample.image BGR uint8, Sample.label the image's annotations (pycocotools
    records), Sample.info {"image_id", "width", "height", "file"}; `coco` the pycocotools index of
    the whole annotation file."""

    family = "coco"

    def __init__(self, opened: Opened, ids: list[str], coco, ann_file: Path, images_dir: Path):
        super().__init__(opened, ids)
        self.coco, self.ann_file, self.images_dir = coco, ann_file, images_dir

    @classmethod
    def open(cls, opened: Opened, split_spec: dict, settings: dict, cache: Path) -> "CocoDetection":
        name = split_spec.get("name")
        if not name:
            raise ZooError(f"{shown(opened.root)}: the COCO split has no name (val2017, ...): no images folder "
                           "or annotation file to read")
        ann_file = opened.root / "annotations" / f"instances_{name}.json"
        coco = load_coco(ann_file)
        if opened.ids_file:
            # ids or file names, one a line; duplicates are refused after parsing ('128372' and
            # '000000128372.jpg' are the same image)
            lines = read_id_lines(opened.ids_file, parse_image_id)
            missing = [(n, i) for n, i in lines if i not in coco.imgs]
            if missing:
                n, i = missing[0]
                raise ZooError(f"{shown(opened.ids_file)}: line {n}: image id {i} is not in {shown(ann_file)}"
                               + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
            image_ids = [i for _, i in lines]
        else:
            image_ids = coco.getImgIds()  # the annotation file's order
        image_ids = opened.limited(image_ids)
        source = cls(opened, [str(int(i)) for i in image_ids], coco, ann_file, opened.root / name)
        for i in image_ids:
            p = source.image_path(int(i))
            if not p.is_file():
                raise ZooError(f"{shown(p)}: image {i} of {shown(ann_file)} is missing")
        return source

    def image_path(self, image_id: int) -> Path:
        """The images folder / the image's file_name, refused when that leaves the folder."""
        name = self.coco.imgs[image_id]["file_name"]
        path = path_inside(self.images_dir, name)
        if path is None:
            raise ZooError(f"{shown(self.ann_file)}: image {image_id} has 'file_name' {name!r}, which leaves "
                           f"{shown(self.images_dir)}")
        return path

    def read(self, sid: str) -> Sample:
        s = self.read_label(sid)
        img = imread(self.image_path(s.info["image_id"]), cv2.IMREAD_COLOR)
        if (img.shape[1], img.shape[0]) != (s.info["width"], s.info["height"]):
            raise ZooError(f"{s.info['file']}: image is {img.shape[1]}x{img.shape[0]}, the annotation file says "
                           f"{s.info['width']}x{s.info['height']}")
        return Sample(sid, img, s.label, s.info)

    def read_label(self, sid: str) -> Sample:
        iid = int(sid)
        img = self.coco.imgs[iid]
        info = {"image_id": iid, "width": img["width"], "height": img["height"],
                "file": shown(self.image_path(iid))}
        return Sample(sid, None, self.coco.imgToAnns.get(iid, []), info)

    def preparation(self) -> dict:
        return {"step": "none: streamed from the original files", "annotations": str(self.ann_file)}
