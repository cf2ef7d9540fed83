"""The calibration set of a reduced-precision run: real samples of the dataset's calibration split
(never the evaluation split unless the user says --calib-from-eval, and the record says so),
preprocessed exactly as the evaluation samples are.

A model's manifest declares its calibration split (`data.splits.calibration`: DSB2018's 96 ids of
the guide's train split, VOC's and Cityscapes' train, COCO's train2017) and, for the built-in
demo, `data.builtin.calibration_ids_file`. `--calib-ids FILE` replaces the split's ids;
`--calib-size N` (default 32) takes a seeded subset of them (`--calib-seed`, kept in split
order); `--calib-method` is the activation-range method (minmax, entropy, percentile).

Calibrating on the samples a run is scored on makes its accuracy the test set's own fit, so the
calibration ids are compared with the run's evaluation ids (after --ids-file and --limit) before
any work (`check_disjoint`, from zoo.stages.config.check_config): a calibration ids file (--calib-ids,
or the declared split's) naming evaluation ids is refused, with how many and the first few.
Calibrating on the evaluation samples is only what --calib-from-eval asks for, and the record
then says so (`from_evaluation_split` true, `evaluation_overlap` the chosen samples that are
evaluated ones).

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
from zoo.ids import read_ids, shown
from zoo.paths import builtin_data_path

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
    evaluation_overlap: int = 0   # chosen calibration samples that the run also evaluates

    @property
    def ids(self) -> list[str]:
        return list(self.source.ids)

    def __len__(self) -> int:
        return len(self.source.ids)

    def describe(self) -> dict:
        """The record's `calibration` block."""
        prov = self.source.provenance()
        return {"split": prov["split"], "from_evaluation_split": self.from_evaluation,
                "evaluation_overlap": self.evaluation_overlap,
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


@dataclass(frozen=True)
class SplitIds:
    """The ids a split is opened with, read from their file without opening the data: `ids` None
    when the family lists the split itself (Cityscapes' folders, COCO's annotation order)."""
    split: str              # the manifest's split: evaluation, calibration, guide_order ...
    name: str | None        # the dataset's own name of it (val, train ...)
    ids_file: Path | None
    ids: list[str] | None


def split_ids(manifest, data: Path | None, ids_file: Path | None, split: str, limit: int | None = None) -> SplitIds:
    """The ids of `split` as zoo.datasets.open_source resolves them (an ids file that is another
    declared split's selects that split; the built-in sample's own ids files), first `limit`."""
    from zoo.datasets import _declared_split, source_class
    splits = manifest.data["splits"]
    if data is not None:
        split = _declared_split(manifest, ids_file, split)
    spec = splits.get(split, {})
    path = Path(ids_file) if ids_file is not None else None
    if path is None and data is None:
        own = manifest.data["builtin"].get("ids_file" if split == "evaluation" else f"{split}_ids_file")
        path = builtin_data_path(manifest.dir, own) if own else None
    elif path is None:
        path = manifest.dir / spec["ids_file"] if spec.get("ids_file") else \
            source_class(manifest.data["family"]).listing(Path(data), spec)
    ids = read_ids(path) if path is not None and path.is_file() else None
    if ids is not None and limit is not None:
        ids = ids[:limit]
    return SplitIds(split, spec.get("name"), path, ids)


def evaluation_overlap(manifest, calibration: SplitIds, evaluation: SplitIds) -> list[str] | None:
    """The calibration ids that are evaluation samples, in calibration order ([]: none; None: all
    of the split, whose ids are not listed). Splits of different names share no sample unless the
    family's splits are lists over one pool of files (DSB2018, VOC)."""
    from zoo.datasets import source_class
    shared = source_class(manifest.data["family"]).splits_share_files
    same = calibration.name is not None and calibration.name == evaluation.name
    if not (same or shared):
        return []
    if calibration.ids is not None and evaluation.ids is not None:
        evaluated = set(evaluation.ids)
        return [i for i in calibration.ids if i in evaluated]
    if not same:
        return []  # a pool of files, one side unlisted: nothing to compare (not a claim of overlap)
    return calibration.ids if calibration.ids is not None else evaluation.ids


def check_disjoint(manifest, data: Path | None, ids_file: Path | None, limit: int | None,
                   calib_ids: Path | None) -> None:
    """Refuse calibration ids that are evaluation ids of this run (one line: the ids file, how
    many, the first few), before any work; --calib-from-eval is the way to do that knowingly."""
    cal = split_ids(manifest, data, calib_ids, "calibration")
    ev = split_ids(manifest, data, ids_file, "evaluation", limit)
    both = evaluation_overlap(manifest, cal, ev)
    if both == []:
        return
    what = shown(cal.ids_file) if cal.ids_file is not None else f"the {cal.name or cal.split} split"
    if cal.ids is not None:
        count = f"{len(both)} of its {len(cal.ids)}"
    else:  # the split's whole listing: the evaluation ids named are in it
        count = f"{len(both)} of its" if both is not None else "all of its"
    first = f" (first: {', '.join(both[:3])})" if both else ""
    raise ZooError(f"{what}: {count} calibration ids are evaluation ids of this run{first}: calibrating on "
                   f"the test set; give calibration ids disjoint from the evaluation split, or --calib-from-eval "
                   f"(calibrates on the evaluation samples; the record marks it)")


def open_calibration(manifest, adapter, data: Path | None, calib_ids: Path | None, size: int | None,
                     method: str, seed: int, from_eval: bool, cache: Path, ids_file: Path | None = None,
                     limit: int | None = None) -> Calibration:
    """The run's calibration set, as described in this module's docstring; a missing calibration
    split is a one-line error that says how to give one. `ids_file` and `limit` are the run's
    evaluation split (--ids-file, --limit): --calib-from-eval calibrates on it, and the
    calibration must not overlap it otherwise."""
    from zoo.datasets import open_source
    if method not in METHODS:
        raise ZooError(f"--calib-method must be one of {', '.join(METHODS)}, got {method!r}")
    size = DEFAULT_SIZE if size is None else size
    if size < 1:
        raise ZooError(f"--calib-size must be >= 1, got {size}")
    if from_eval:
        if calib_ids is not None:
            raise ZooError("--calib-from-eval and --calib-ids exclude each other")
        source = open_source(manifest, data, ids_file, None, cache, split="evaluation")
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
        check_disjoint(manifest, data, ids_file, limit, calib_ids)
        source = open_source(manifest, data, calib_ids, None, cache, split="calibration")
    if len(source) == 0:
        raise ZooError(f"{manifest.name}: the calibration split is empty")
    chosen = select(source.ids, size, seed)
    evaluated = split_ids(manifest, data, ids_file, "evaluation", limit).ids
    overlap = len(set(chosen) & set(evaluated)) if evaluated is not None else (len(chosen) if from_eval else 0)
    return Calibration(source=source.subset(chosen), adapter=adapter, input_name=manifest.input["name"],
                       method=method, seed=seed, requested_size=size, from_evaluation=from_eval,
                       evaluation_overlap=overlap)
