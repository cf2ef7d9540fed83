"""DSB2018 (Kaggle Data Science Bowl 2018) stage1_train, as UNet++ upstream reads it.

Layout: <root>/stage1_train/<id>/images/<id>.png and <root>/stage1_train/<id>/masks/*.png (one
PNG per nucleus). Upstream's preprocess_dsb2018.py runs once per dataset (FACTS.md section 5,
seed 004), cached here by content: BGR read (cv2 IMREAD_COLOR, alpha dropped), mask = union over
masks/*.png of (gray > 127), both resized to `img_size` with cv2 bilinear, written as PNG (the
mask as uint8(mask * 255): resizing makes it not strictly binary). A sample is the prepared
image (BGR uint8) and mask (uint8 0..255)."""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from zoo.cache import ensure_entry
from zoo.datasets.base import Opened, Sample, Source
from zoo.errors import ZooError
from zoo.fileutil import text_sha256
from zoo.ids import is_utf8_name, name_problem, read_ids, shown
from zoo.images import imread, imwrite

PREP_VERSION = 1  # bump when the preparation code changes: it is part of the cache key


def source_files(root: Path, sample_id: str) -> tuple[Path, list[Path]]:
    """The image and mask files of one id; a missing one is a one-line error."""
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
    image_path, mask_paths = source_files(root, sample_id)
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


class DSB2018(Source):
    """stage1_train, prepared once to img_size x img_size PNGs (a zoo.cache entry keyed by the
    ids, the size and every source file's size and mtime)."""

    family = "dsb2018"
    splits_share_files = True

    def __init__(self, opened: Opened, ids: list[str], img_size: int, cache: Path):
        super().__init__(opened, ids)
        self.img_size = img_size
        self.prepared, self._preparation = self._prepare(cache)

    @classmethod
    def open(cls, opened: Opened, split: dict, settings: dict, cache: Path) -> "DSB2018":
        if not (opened.root / "stage1_train").is_dir():
            raise ZooError(f"{opened.root}: not a DSB2018 folder (expected "
                           f"{opened.root / 'stage1_train'}/<id>/images/<id>.png)")
        if opened.ids_file is None:
            raise ZooError(f"{opened.root}: DSB2018 has no split files of its own: give --ids-file")
        ids = opened.limited(read_ids(opened.ids_file))
        return cls(opened, ids, int(settings["img_size"]), cache)

    def _fingerprint(self) -> str:
        rows = []
        for sid in self.ids:
            image, masks = source_files(self.root, sid)
            for p in (image, *masks):
                st = p.stat()
                rows.append(f"{p.relative_to(self.root)}|{st.st_size}|{st.st_mtime_ns}")
        return text_sha256("\n".join(rows))

    def _prepare(self, cache: Path) -> tuple[Path, dict]:
        """The prepared PNGs as a zoo.cache entry: concurrent runs prepare it once (the others
        wait for it), it is verified before use, and an interrupted preparation leaves no
        temporary folder behind."""
        size = self.img_size
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

    def _mask(self, sample_id: str) -> np.ndarray:
        return imread(self.prepared / "masks" / "0" / f"{sample_id}.png", cv2.IMREAD_GRAYSCALE)

    def read(self, sample_id: str) -> Sample:
        img = imread(self.prepared / "images" / f"{sample_id}.png", cv2.IMREAD_COLOR)
        return Sample(sample_id, img, self._mask(sample_id))

    def read_label(self, sample_id: str) -> Sample:
        return Sample(sample_id, None, self._mask(sample_id))

    def preparation(self) -> dict:
        return self._preparation
