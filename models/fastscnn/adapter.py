"""Fast-SCNN on Cityscapes val: the guide's preprocessing, label mapping, order and metrics.

FACTS.md section 3, seed 002. Data flow, as upstream (testval mode) and the guide:
  1. image: PIL `Image.open().convert('RGB')` -> np.array -> /255 (ToTensor) ->
     Normalize(mean=[0.485,0.456,0.406], std=[0.229,0.224,0.225]) in RGB -> CHW float32, full size
     (1024x2048 for Cityscapes), no resize, crop or flip;
  2. label: `gtFine/<split>/<city>/<name>_gtFine_labelIds.png` mapped labelId -> trainId
     (zoo.cityscapes; unmapped ids -> 255 here, -1 upstream: the same pixels are ignored); when a
     sample has only `_gtFine_labelTrainIds.png`, that file (same values) is used;
  3. order: sorted by city then name by default; `--ids-file` gives an explicit order (sample names,
     or the guide's `sort.log` lines `<name>_leftImg8bit.png`). The guide's own order ships as
     `guide_order.txt`: its reported running averages are only reproducible in that order.

The exported ONNX graph is fixed to one spatial size (the exact pyramid pooling is a constant
averaging for the size seen at export, and zoo.run exports with the dataset's first samples), so a
dataset must have one image size: mixed sizes are refused when the dataset is opened.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.adapter import Dataset, ModelAdapter
from zoo.cityscapes import CLASSES, Sample, find_samples, read_train_ids
from zoo.errors import ZooError, one_line
from zoo.ids import read_ids, shown
from zoo.images import check_pixels
from zoo.fileutil import text_sha256
from zoo.metrics import SegmentronMetric
from zoo.weights import load_strict, read_checkpoint, unwrap_state_dict

IMAGE_SUFFIX = "_leftImg8bit.png"
GUIDE_ORDER_FILE = "guide_order.txt"


def _sample_name(line: str) -> str:
    """`<city>_<seq>_<frame>` from a name or the guide's sort.log form `<dir>/<name>_leftImg8bit.png`."""
    name = line.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (IMAGE_SUFFIX, ".png"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_order(path: Path) -> list[str]:
    """Sample names in order, one a line: `<city>_<seq>_<frame>`, or the guide's sort.log form
    `<name>_leftImg8bit.png` (a leading folder is dropped). Blank lines and `#` comments skipped."""
    return read_ids(path, _sample_name)


def load_rgb(path: Path) -> np.ndarray:
    """PIL open -> convert('RGB') -> HxWx3 uint8 (upstream's reader); one-line error otherwise."""
    from PIL import Image
    path = Path(path)
    check_pixels(path)  # a huge declared size: refused from the header, before PIL allocates
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise ZooError(f"{shown(path)}: image not found") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib errors... for bad files
        raise ZooError(f"{shown(path)}: unreadable or truncated image ({one_line(exc)[:200]})") from None


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header (no decoding)."""
    from PIL import Image
    check_pixels(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as exc:
        raise ZooError(f"{shown(path)}: unreadable or truncated image ({one_line(exc)[:200]})") from None
    return h, w


def normalize(rgb: np.ndarray, mean, std) -> np.ndarray:
    """ToTensor + Normalize in float32: ((rgb / 255) - mean) / std per RGB channel; HWC -> CHW."""
    mean, std = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    out = np.empty((3, *rgb.shape[:2]), dtype=np.float32)
    for c in range(3):  # the same float32 operations, per channel, straight into CHW
        np.divide(rgb[..., c], np.float32(255.0), out=out[c], dtype=np.float32)
        np.subtract(out[c], mean[c], out=out[c])
        np.divide(out[c], std[c], out=out[c])
    return out


class CityscapesVal(Dataset):
    """Cityscapes images + labels in their real layout, read and normalised on the fly."""

    name = "cityscapes"

    def __init__(self, root: Path, samples: list[Sample], prep: dict, *, split: str, order: str,
                 guide_order: bool, ids_file: Path | None, builtin: bool, limit: int | None,
                 expected: int | None):
        self.root, self.prep = Path(root), prep
        self.samples = {s.name: s for s in samples}
        self.ids = [s.name for s in samples]
        self.split, self.order, self.guide_order = split, order, guide_order
        self.ids_file, self.builtin, self.limit, self.expected = ids_file, builtin, limit, expected
        self.size = self._common_size(samples)

    @staticmethod
    def _common_size(samples: list[Sample]) -> tuple[int, int]:
        first = samples[0]
        size = image_size(first.image)
        for s in samples[1:]:
            other = image_size(s.image)
            if other != size:
                raise ZooError(f"{shown(s.image)}: image is {other[1]}x{other[0]} but {shown(first.image.name)} is "
                               f"{size[1]}x{size[0]}: one run evaluates one image size (the exported graph, "
                               f"with its exact pyramid pooling, is fixed to the size it was exported at)")
        return size

    def read(self, sample_id: str):
        sample = self.samples[sample_id]
        rgb = load_rgb(sample.image)
        label, kind = read_train_ids(sample, prefer="labelIds")
        if label.shape != rgb.shape[:2]:
            raise ZooError(f"{shown(sample.labels[kind])}: label is {label.shape[1]}x{label.shape[0]}, "
                           f"image is {rgb.shape[1]}x{rgb.shape[0]}")
        return rgb, label

    def preprocess(self, raw):
        rgb, label = raw
        return normalize(rgb, self.prep["mean"], self.prep["std"]), label

    def provenance(self) -> dict:
        return {"name": self.name, "path": str(self.root), "split": self.split,
                "ids_file": str(self.ids_file) if self.ids_file else None,
                "num_samples": len(self.ids), "expected_samples": self.expected,
                "ids_sha256": text_sha256("\n".join(self.ids)), "limit": self.limit, "builtin": self.builtin,
                "preparation": {"step": "none: images read with PIL (RGB) and normalised per sample, full size, "
                                        "no resize or cache",
                                "order": self.order, "guide_order": self.guide_order,
                                "image_size": list(self.size),
                                "labels": "gtFine labelIds -> trainIds (unmapped -> 255 ignore); labelTrainIds "
                                          "when a sample has no labelIds"}}


class RunningAverageMetric(SegmentronMetric):
    """The guide's reported figures (Fast_SCNN_postprocess.py): after each image, the running
    dataset-level mIoU / pixAcc are added up; it prints sum / 5, i.e. 100 x the mean over its 500 images
    ("AvgmIou", "AvgpixAcc").
    Headline: `running_avg_miou`. The guide redefines `batch_pix_accuracy` with a plain argmax
    (no `.long()` truncation), so its AvgpixAcc is `running_avg_pix_acc_true` here
    (`running_avg_pix_acc` is the same average of upstream's truncating pixAcc).

    The value depends on the order of the images: it is comparable with the guide's figure only in
    the guide's sort.log order (`comparable` says whether this run used it)."""

    metric = "running_avg_miou"

    def __init__(self, name: str, description: str, classes: tuple[str, ...], comparable: bool | None = None,
                 not_comparable_reason: str | None = None):
        super().__init__(name, description, classes)
        self.comparable, self.not_comparable_reason = comparable, not_comparable_reason
        self.sum_running_pixacc_true = 0.0

    def update(self, outputs, targets):
        for i, gt in enumerate(targets):  # one image at a time: the running values after each image
            super().update(outputs[i:i + 1], [gt])
            mat = self.cm.mat
            self.sum_running_pixacc_true += float(np.trace(mat) / (self.EPS + mat.sum()))

    def compute(self) -> dict:
        out = super().compute()
        out["running_avg_pix_acc_true"] = self.sum_running_pixacc_true / max(self.n, 1)
        return out


class UpstreamView(SegmentronMetric):
    """The upstream figures (SegmenTron's dataset-level mIoU / pixAcc) read from the guide
    metric's accumulation: both score the same predictions against the same labels, so the
    argmaxes of a 19 x 1024 x 2048 map are computed once per image, not twice."""

    def __init__(self, name: str, description: str, source: SegmentronMetric):
        self.name, self.description, self.classes = name, description, source.classes
        self.source = source

    def update(self, outputs, targets):
        pass  # the source metric (updated before this one, in the same list) did the work

    def compute(self) -> dict:
        return SegmentronMetric.compute(self.source)

    def per_class(self) -> list[dict]:
        return SegmentronMetric.per_class(self.source)


class FastSCNNAdapter(ModelAdapter):
    def __init__(self, manifest, **overrides):
        super().__init__(manifest, **overrides)  # every option checked against its declaration
        o = self.options
        self._dataset: CityscapesVal | None = None
        self._export_hw_requested = str(o.get("export_hw", "auto"))

    def build(self):
        from models.fastscnn.model import FastSCNN
        o = self.options
        return FastSCNN(num_classes=o["num_classes"], aux=o["aux"], ppm=o["ppm"], aux_outputs=o["aux_outputs"])

    def load_weights(self, module, path: Path) -> None:
        # SegmenTron saves a raw state_dict (model.module.state_dict() under DataParallel); accept an
        # {'state_dict': ...} container and a 'module.' prefix, nothing looser. Strict, aux heads included.
        sd = unwrap_state_dict(read_checkpoint(path), strip_prefixes=("module.",))
        load_strict(module, sd, path)

    def guide_order(self) -> list[str]:
        return read_order(self.manifest.dir / self.manifest.data["order_file"])

    def dataset(self, data, ids_file, limit, cache):
        d = self.manifest.data
        builtin = data is None
        root = (self.manifest.dir / d["builtin"]["path"]).resolve() if builtin else Path(data)
        split = d.get("split", "val")
        order = read_order(ids_file) if ids_file else None
        samples = find_samples(root, split, order, ids_file)
        guide = self.guide_order()
        names = [s.name for s in samples]
        is_guide = names == guide
        if order is None:
            desc = "sorted by city then name"
        elif is_guide:
            desc = f"the guide's sort.log order ({ids_file})"
        else:
            desc = f"as listed in {ids_file}"
        if limit is not None:
            samples = samples[:limit]
            desc += f", first {limit}"
        split_label = "builtin sample" if builtin else f"{split}, " + ("guide sort.log order" if is_guide else
                                                                      "sorted" if order is None else "ids-file order")
        self._dataset = CityscapesVal(root, samples, d["preprocessing"], split=split_label, order=desc,
                                      guide_order=is_guide and limit is None,
                                      ids_file=Path(ids_file) if ids_file else None, builtin=builtin, limit=limit,
                                      expected=None if builtin else d.get("expected_samples"))
        self._resolve_export_hw(self._dataset.size)
        return self._dataset

    def _resolve_export_hw(self, size: tuple[int, int]) -> None:
        """The ONNX graph is fixed to one spatial size (exact PPM constants), and zoo.run exports with
        the dataset's first samples: `export_hw` resolves to the dataset's "HxW". It is a model option
        so that it is recorded in the result and is part of the export cache key (an export made for
        another image size is never reused). An explicit value must match the data."""
        got = f"{size[0]}x{size[1]}"
        want = self._export_hw_requested
        if want != "auto" and want != got:
            raise ZooError(f"{shown(self._dataset.root)}: images are {got} (HxW) but the option export_hw={want} was given")
        self.options["export_hw"] = got

    def metrics(self):
        protos = self.manifest.reference["protocols"]
        ds = self._dataset
        guide_desc = protos["guide"]["description"]
        comparable, reason = None, None
        if ds is not None:
            comparable = ds.guide_order
            guide_desc += f" [evaluated in order: {ds.order}]"
            complete = ds.expected is not None and len(ds) == ds.expected
            if complete and not comparable:  # (a subset is already marked not comparable by zoo.run)
                reason = ("the running average depends on the image order and this run did not use the guide's "
                          "sort.log order")
                guide_desc += f" [{reason}: not comparable to the guide's figure]"
        guide = RunningAverageMetric("guide", guide_desc, CLASSES, comparable=comparable, not_comparable_reason=reason)
        return [guide, UpstreamView("upstream", protos["upstream"]["description"], guide)]

    def decision(self, outputs):
        return outputs.argmax(1)
