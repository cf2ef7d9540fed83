"""Predictions: what an adapter's `postprocess` makes of one sample's outputs, and how a run keeps
them (`--save-predictions`) so that `invoke score` recomputes the accuracy without inference.

A prediction is either
  - a dict of named 2-D maps (a label map, a mask): kept as one lossless PNG per key and sample,
    `<key>/<id>.png` (bool masks as 0/255, labels as uint8, or uint16 above 255 classes); or
  - `Detections` of one image: kept in one COCO results file, `detections.json`
    ([{image_id, category_id, bbox: [x, y, w, h], score}], the rows COCO AP is computed from).
`index.json` lists the ids in scoring order and what was kept; `read_predictions` checks its shape
first (an edited or foreign index is one line naming it, never a traceback in the middle of a score).

The record keeps a digest of the folder (`predictions.sha256`: every file's relative path and
sha256, `folder_digest`), as pip's --require-hashes keeps an artefact's: `invoke score` checks the
files against it before scoring, so a saved prediction edited or damaged after the run is named
as such, never taken for a change of the dataset's labels."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import ZooError
from zoo.fileutil import atomic_write_text, read_json
from zoo.ids import shown

FORMAT_VERSION = 1


@dataclass
class Detections:
    """One image's detections in its original coordinates, as COCO results rows."""
    image_id: int
    rows: list[dict]                    # {image_id, category_id, bbox [x, y, w, h], score}

    @classmethod
    def from_boxes(cls, image_id: int, boxes_xyxy, scores, category_ids) -> "Detections":
        rows = []
        for (x1, y1, x2, y2), s, c in zip(np.asarray(boxes_xyxy, dtype=np.float64), scores, category_ids):
            rows.append({"image_id": int(image_id), "category_id": int(c),
                         "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": float(s)})
        return cls(int(image_id), rows)


def _png_array(key: str, value) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim != 2:
        raise ZooError(f"prediction {key!r}: a saved map must be 2-D, got shape {a.shape}")
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.dtype.kind not in "iu":
        raise ZooError(f"prediction {key!r}: a saved map must hold integers 0..65535, got {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise ZooError(f"prediction {key!r}: a saved map must hold integers 0..65535, got {a.dtype} values "
                       f"{a.min()}..{a.max()}")
    return a.astype(np.uint8 if not a.size or a.max() <= 255 else np.uint16)


class PredictionWriter:
    """Writes a run's predictions into a new folder (created now: never mixed with another run's)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise ZooError(f"{shown(self.folder)}: already exists (predictions are never written over)") from None
        self.ids: list[str] = []
        self.maps: dict[str, str] = {}      # key -> dtype kind kept ("bool" or "int")
        self.detections: list[dict] | None = None

    def restart(self) -> None:
        """Forget what was added (a batch size whose pipeline failed part way)."""
        for child in self.folder.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        self.ids, self.maps, self.detections = [], {}, None

    def add(self, sample_id: str, prediction) -> None:
        import cv2
        if isinstance(prediction, Detections):
            if self.detections is None:
                self.detections = []
            self.detections.extend(prediction.rows)
            self.ids.append(sample_id)
            return
        pngs = {}
        for key, value in prediction.items():  # every map checked before anything is kept
            arr = np.asarray(value)
            kind = "bool" if arr.dtype == bool else "int"
            if self.maps.get(key, kind) != kind:
                raise ZooError(f"prediction {key!r} of {sample_id}: its map is {kind}, the earlier samples' were "
                               f"{self.maps[key]} (a key's maps are read back one way)")
            pngs[key] = (kind, _png_array(key, arr))
        for key, (kind, png) in pngs.items():
            self.maps.setdefault(key, kind)
            path = self.folder / key / f"{sample_id}.png"
            path.parent.mkdir(exist_ok=True)
            if not cv2.imwrite(str(path), png):
                raise ZooError(f"{shown(path)}: cannot write the prediction")
        self.ids.append(sample_id)

    def close(self) -> dict:
        """Writes the index (and the detections); returns the record's `predictions` block."""
        if self.detections is not None:
            atomic_write_text(self.folder / "detections.json", json.dumps(self.detections, allow_nan=False))
        index = {"format_version": FORMAT_VERSION, "ids": self.ids, "maps": self.maps,
                 "detections": "detections.json" if self.detections is not None else None}
        atomic_write_text(self.folder / "index.json", json.dumps(index, indent=1))
        return {"path": str(self.folder), "num_samples": len(self.ids), "maps": sorted(self.maps),
                "detections": self.detections is not None, **folder_digest(self.folder)}

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def folder_digest(folder: Path) -> dict:
    """{"sha256": the digest of every file's relative path and sha256, "files": how many}."""
    import hashlib
    from zoo.fileutil import file_digest
    folder = Path(folder)
    h = hashlib.sha256()
    files = _files(folder)
    for p in files:
        h.update(f"{p.relative_to(folder).as_posix()}\0{file_digest(p)}\n".encode())
    return {"sha256": h.hexdigest(), "files": len(files)}


def check_digest(folder: Path, kept: dict) -> None:
    """The folder's files are the ones the record vouches for (`kept`: its predictions block; a
    record before schema 1.10 has no digest and is not checked); else a one-line ZooError naming
    the first file that differs."""
    want = kept.get("sha256")
    if want is None:
        return
    got = folder_digest(folder)
    if got["sha256"] == want:
        return
    raise ZooError(f"{shown(folder)}: the saved predictions are not the ones the record vouches for "
                   f"({got['files']} file(s) now, {kept.get('files')} recorded; folder sha256 {got['sha256'][:12]}, "
                   f"recorded {want[:12]}): edited or damaged after the run")


def _checked_index(index, path: Path) -> dict:
    """index.json as PredictionWriter.close wrote it, or a one-line ZooError naming what is not:
    its format, the ids (distinct strings), the maps (name -> bool|int), the detections file (a
    name inside the folder)."""
    def bad(what: str):
        raise ZooError(f"{shown(path)}: not a predictions index: {what}")
    if not isinstance(index, dict):
        bad(f"expected an object, got {type(index).__name__}")
    if index.get("format_version") != FORMAT_VERSION:
        raise ZooError(f"{shown(path)}: predictions format {index.get('format_version')!r}, "
                       f"this zoo reads {FORMAT_VERSION}")
    ids = index.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        bad("no 'ids' list of sample ids" if ids is None else "'ids' must be a list of sample id strings")
    if len(set(ids)) != len(ids):
        bad("'ids' lists a sample twice")
    maps, det = index.get("maps", {}), index.get("detections")
    if not isinstance(maps, dict) or not all(isinstance(k, str) and k and "/" not in k and k not in (".", "..")
                                             and v in ("bool", "int") for k, v in maps.items()):
        bad("'maps' must map prediction names to 'bool' or 'int'")
    if det is not None and (not isinstance(det, str) or Path(det).name != det or det in (".", "..")):
        bad("'detections' must be a file name in the predictions folder, or null")
    if det is not None and not all(i.isascii() and i.isdigit() for i in ids):
        bad("the ids of detections must be integer image ids")
    if not maps and det is None and ids:
        bad("neither 'maps' nor 'detections': nothing was kept")
    return index


def read_predictions(folder: Path):
    """(ids, iterator of (id, prediction)) of a folder PredictionWriter wrote."""
    import cv2
    folder = Path(folder)
    index_path = folder / "index.json"
    if not index_path.is_file():
        raise ZooError(f"{shown(index_path)}: no saved predictions here (run with --save-predictions)")
    index = _checked_index(read_json(index_path, "predictions index"), index_path)
    ids = list(index["ids"])
    by_image: dict[int, list[dict]] = {}
    if index.get("detections"):
        det_path = folder / index["detections"]
        rows = read_json(det_path, "detections")
        for r in rows if isinstance(rows, list) else [None]:
            try:
                by_image.setdefault(int(r["image_id"]), []).append(r)
            except (TypeError, KeyError, ValueError):
                raise ZooError(f"{shown(det_path)}: not a list of detections with integer image_id "
                               f"(got {str(r)[:80]})") from None

    def items():
        for sid in ids:
            if index.get("detections"):
                yield sid, Detections(int(sid), by_image.get(int(sid), []))
                continue
            pred = {}
            for key, kind in index["maps"].items():
                path = folder / key / f"{sid}.png"
                arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                if arr is None:
                    raise ZooError(f"{shown(path)}: missing or unreadable saved prediction")
                pred[key] = arr > 127 if kind == "bool" else arr
            yield sid, pred
    return ids, items()
