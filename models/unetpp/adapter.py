"""UNet++ on DSB2018: the guide's data preparation, preprocessing and the two IoU protocols.

FACTS.md section 5, seed 004. Data flow, as upstream and the guide:
  1. preparation (upstream preprocess_dsb2018.py, once per dataset, cached): BGR read
     (cv2 IMREAD_COLOR, alpha dropped), mask = union over masks/*.png of (gray > 127), both resized
     to 96x96 with cv2 bilinear, written as PNG (mask as uint8(mask * 255), not strictly binary);
  2. model input (upstream dataset.py / guide preprocess): BGR uint8 -> albumentations-style
     Normalize(ImageNet mean/std, applied to BGR as-is, max_pixel_value 255) -> / 255 again -> CHW;
  3. target: mask / 255, positive where > 0.5.
"""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from zoo.adapter import Dataset, ModelAdapter
from zoo.cache import ensure_entry
from zoo.errors import ZooError
from zoo.fileutil import text_sha256
from zoo.ids import is_utf8_name, name_problem, read_ids, shown
from zoo.images import imread, imwrite
from zoo.metrics import BinaryIoU
from zoo.weights import load_strict, read_checkpoint, unwrap_state_dict

PREP_VERSION = 1  # bump when the preparation code changes: it is part of the cache key


def _source_files(root: Path, sample_id: str) -> tuple[Path, list[Path]]:
    problem = name_problem(sample_id)  # ids become file names, here and in the cache
    if problem:
        raise ZooError(f"id {sample_id!r} {problem}")
    sdir = root / "stage1_train" / sample_id
    image = sdir / "images" / f"{sample_id}.png"
    if not image.is_file():
        raise ZooError(f"{image}: image not found for id {sample_id}")
    masks = sorted((sdir / "masks").glob("*.png"))
    for m in masks:  # mask file names go into the cache key: they must be text
        if not is_utf8_name(m.name):
            raise ZooError(f"{shown(m)}: file name is not UTF-8; rename it")
    if not masks:
        raise ZooError(f"{sdir / 'masks'}: no mask PNGs for id {sample_id}")
    return image, masks


def prepare_sample(root: Path, sample_id: str, out: Path, img_size: int) -> None:
    """Upstream preprocess_dsb2018.py for one id: writes images/<id>.png and masks/0/<id>.png."""
    image_path, mask_paths = _source_files(root, sample_id)
    img = imread(image_path, cv2.IMREAD_COLOR)  # 3-channel BGR, alpha dropped
    mask = np.zeros(img.shape[:2], dtype=np.float64)
    for mp in mask_paths:
        m = imread(mp, cv2.IMREAD_GRAYSCALE)
        if m.shape != mask.shape:
            raise ZooError(f"{mp}: mask is {m.shape[1]}x{m.shape[0]}, image is {mask.shape[1]}x{mask.shape[0]}")
        mask[m > 127] = 1
    img = cv2.resize(img, (img_size, img_size))     # INTER_LINEAR, as upstream
    mask = cv2.resize(mask, (img_size, img_size))
    imwrite(out / "images" / f"{sample_id}.png", img)  # checked: cv2.imwrite returns False, never raises
    imwrite(out / "masks" / "0" / f"{sample_id}.png", (mask * 255).astype("uint8"))


def normalize(bgr: np.ndarray, mean, std, max_pixel: float, extra_divide: float) -> np.ndarray:
    """albumentations Normalize (float32: (x - mean*max) * 1/(std*max)), then upstream's extra
    `astype(float32) / 255`; HWC uint8 BGR -> CHW float32."""
    mean = np.asarray(mean, dtype=np.float32) * max_pixel
    denom = np.reciprocal(np.asarray(std, dtype=np.float32) * max_pixel)
    x = (bgr.astype(np.float32) - mean) * denom
    x = x.astype(np.float32) / np.float32(extra_divide)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class DSB2018(Dataset):
    """DSB2018 stage1_train layout, prepared once to 96x96 PNGs (cached by content key)."""

    name = "dsb2018"

    def __init__(self, root: Path, ids: list[str], ids_file: Path, prep: dict, cache: Path,
                 builtin: bool, limit: int | None, expected: int | None, split: str | None):
        self.root, self.ids, self.ids_file = Path(root), ids, Path(ids_file)
        self.prep, self.builtin, self.limit, self.expected, self.split = prep, builtin, limit, expected, split
        self.prepared, self.preparation = self._prepare(cache)

    def _fingerprint(self) -> str:
        rows = []
        for sid in self.ids:
            image, masks = _source_files(self.root, sid)
            for p in (image, *masks):
                st = p.stat()
                rows.append(f"{p.relative_to(self.root)}|{st.st_size}|{st.st_mtime_ns}")
        return text_sha256("\n".join(rows))

    def _prepare(self, cache: Path) -> tuple[Path, dict]:
        """The prepared 96x96 PNGs as a zoo.cache entry: concurrent runs prepare it once (the
        others wait for it), it is verified before use, and an interrupted preparation leaves
        no temporary folder behind."""
        size = int(self.prep["img_size"])
        key = text_sha256(json.dumps({"v": PREP_VERSION, "root": str(self.root.resolve()), "ids": self.ids,
                                      "size": size, "files": self._fingerprint()}, sort_keys=True))[:20]
        out = cache / "datasets" / f"dsb2018_{size}" / key
        info = {"step": "upstream preprocess_dsb2018.py (BGR read, union of masks > 127, cv2 bilinear resize)",
                "img_size": size, "cache_key": key, "path": str(out), "prep_version": PREP_VERSION}
        seconds = 0.0

        def build(tmp: Path) -> None:
            nonlocal seconds
            (tmp / "images").mkdir()
            (tmp / "masks" / "0").mkdir(parents=True)
            t0 = time.perf_counter()
            print(f"preparing {len(self.ids)} DSB2018 samples at {size}x{size} -> {out}", file=sys.stderr)
            pool = ThreadPoolExecutor(max_workers=2)
            try:
                list(pool.map(lambda sid: prepare_sample(self.root, sid, tmp, size), self.ids))
            finally:  # interrupted or failed: drop the queued samples, let the running ones finish
                pool.shutdown(wait=True, cancel_futures=True)
            (tmp / "DONE").write_text(json.dumps(info))  # as before; the entry's sidecar is written after it
            seconds = time.perf_counter() - t0

        cached = ensure_entry(out, build)
        return out, {**info, "cached": cached, "seconds": round(seconds, 3)}

    def read(self, sample_id: str):
        img = imread(self.prepared / "images" / f"{sample_id}.png", cv2.IMREAD_COLOR)
        mask = imread(self.prepared / "masks" / "0" / f"{sample_id}.png", cv2.IMREAD_GRAYSCALE)
        return img, mask

    def preprocess(self, raw):
        img, mask = raw
        p = self.prep
        x = normalize(img, p["mean"], p["std"], p["max_pixel_value"], p["extra_divide"])
        return x, mask.astype(np.float32) / 255.0

    def provenance(self) -> dict:
        return {"name": self.name, "path": str(self.root), "split": self.split, "ids_file": str(self.ids_file),
                "num_samples": len(self.ids), "expected_samples": self.expected,
                "ids_sha256": text_sha256("\n".join(self.ids)), "limit": self.limit,
                "builtin": self.builtin, "preparation": self.preparation}


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

    def dataset(self, data, ids_file, limit, cache):
        d = self.manifest.data
        builtin = data is None
        if builtin:
            root = self.manifest.dir / d["builtin"]["path"]
            ids_file = ids_file or self.manifest.dir / d["builtin"]["ids_file"]
        else:
            root = Path(data)
            ids_file = ids_file or self.manifest.dir / d["ids_file"]
        if not root.is_dir():
            raise ZooError(f"{root}: data folder not found")
        if not (root / "stage1_train").is_dir():
            raise ZooError(f"{root}: not a DSB2018 folder (expected {root / 'stage1_train'}/<id>/images/<id>.png)")
        ids = read_ids(ids_file)
        if limit is not None:
            ids = ids[:limit]
        full = Path(ids_file).resolve() == (self.manifest.dir / d["ids_file"]).resolve()
        return DSB2018(root, ids, Path(ids_file), d["preprocessing"], cache, builtin, limit,
                       expected=d.get("expected_samples") if full else None,
                       split="val" if full else ("builtin-val-slice" if builtin else None))

    def metrics(self):
        protos = self.manifest.reference["protocols"]
        return [
            BinaryIoU("guide", protos["guide"]["description"], threshold=0.5, apply_sigmoid=False, aggregate="image"),
            BinaryIoU("upstream", protos["upstream"]["description"], threshold=0.5, apply_sigmoid=True,
                      aggregate="batch", group=16),
        ]

    def decision(self, outputs):
        return outputs > 0  # sigmoid > 0.5
