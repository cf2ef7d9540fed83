"""The calibration set of a reduced-precision run: real samples of the dataset's calibration split
(never the evaluation split unless the user says --calib-from-eval, and the record says so),
preprocessed exactly as the evaluation samples are.

A model's manifest declares its calibration split (`data.splits.calibration`: DSB2018's 96 ids of
the guide's train split, VOC's and Cityscapes' train, COCO's train2017) and, for the built-in
demo, `data.builtin.calibration_ids_file`. `--calib-ids FILE` replaces the split's ids;
`--calib-size N` (default 32) takes a seeded subset of them (`--calib-seed`, kept in split
order); `--calib-method` is the activation-range method (minmax, entropy, percentile).

`Calibration.describe()` is what the record keeps and `key()` what quantized artifacts are cached
by: the ids (their hash), the method, the seed, the size, where they came from."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import ZooError
from zoo.fileutil import text_sha256

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_SIZE = 32


@dataclass(frozen=True)
class Calibration:
    source: object          # zoo.datasets.Source over the selected calibration ids, in split order
    adapter: object         # the run's ModelAdapter: preprocess is the evaluation's
    input_name: str
    method: str = "minmax"
    seed: int = 0
    requested_size: int = DEFAULT_SIZE
    from_evaluation: bool = False

    @property
    def ids(self) -> list[str]:
        return list(self.source.ids)

    def __len__(self) -> int:
        return len(self.source.ids)

    def describe(self) -> dict:
        """The record's `calibration` block."""
        prov = self.source.provenance()
        return {"split": prov["split"], "from_evaluation_split": self.from_evaluation,
                "root": prov["path"], "ids_file": prov["ids_file"], "builtin": prov["builtin"],
                "num_samples": len(self), "requested_size": self.requested_size,
                "ids_sha256": text_sha256("\n".join(self.ids)), "method": self.method, "seed": self.seed}

    def key(self) -> str:
        """A hash of everything that decides the calibration (not where the files lie)."""
        d = self.describe()
        keep = {k: d[k] for k in ("split", "from_evaluation_split", "num_samples", "ids_sha256", "method", "seed")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

    def inputs(self) -> Iterator[np.ndarray]:
        """Each calibration sample preprocessed (CHW float32), in order."""
        for sid in self.source.ids:
            x, _ = self.adapter.preprocess(self.source.read(sid))
            yield np.ascontiguousarray(x, dtype=np.float32)

    def batches(self, batch_size: int = 1) -> Iterator[np.ndarray]:
        """The preprocessed samples stacked in batches of `batch_size` (the last one may be smaller)."""
        buf: list[np.ndarray] = []
        for x in self.inputs():
            buf.append(x)
            if len(buf) == batch_size:
                yield np.stack(buf)
                buf = []
        if buf:
            yield np.stack(buf)

    def feeds(self, batch_size: int = 1) -> Iterator[dict[str, np.ndarray]]:
        """{input name: batch}, as a runtime is fed."""
        for b in self.batches(batch_size):
            yield {self.input_name: b}


def select(ids: list[str], size: int, seed: int) -> list[str]:
    """`size` of `ids` chosen with `seed`, kept in their order (all of them when size >= len)."""
    if size >= len(ids):
        return list(ids)
    rng = np.random.default_rng(seed)
    return [ids[i] for i in sorted(rng.choice(len(ids), size=size, replace=False).tolist())]


def open_calibration(manifest, adapter, data: Path | None, calib_ids: Path | None, size: int | None,
                     method: str, seed: int, from_eval: bool, cache: Path) -> Calibration:
    """The run's calibration set, as described in this module's docstring; a missing calibration
    split is a one-line error that says how to give one."""
    from zoo.datasets import open_source
    if method not in METHODS:
        raise ZooError(f"--calib-method must be one of {', '.join(METHODS)}, got {method!r}")
    size = DEFAULT_SIZE if size is None else size
    if size < 1:
        raise ZooError(f"--calib-size must be >= 1, got {size}")
    if from_eval:
        if calib_ids is not None:
            raise ZooError("--calib-from-eval and --calib-ids exclude each other")
        source = open_source(manifest, data, None, None, cache, split="evaluation")
    else:
        splits = manifest.data["splits"]
        builtin_ids = manifest.data["builtin"].get("calibration_ids_file")
        if "calibration" not in splits or (data is None and calib_ids is None and not builtin_ids):
            where = "its built-in sample has" if data is None and "calibration" in splits else "its manifest declares"
            raise ZooError(f"{manifest.name}: no calibration split ({where} none): give --data with the dataset's "
                           f"calibration split, --calib-ids FILE, or --calib-from-eval (calibrates on the "
                           f"evaluation samples; the record marks it)")
        if calib_ids is not None and not Path(calib_ids).is_file():
            raise ZooError(f"{calib_ids}: calibration ids file not found")
        source = open_source(manifest, data, calib_ids, None, cache, split="calibration")
    if len(source) == 0:
        raise ZooError(f"{manifest.name}: the calibration split is empty")
    chosen = select(source.ids, size, seed)
    return Calibration(source=source.subset(chosen), adapter=adapter, input_name=manifest.input["name"],
                       method=method, seed=seed, requested_size=size, from_evaluation=from_eval)
