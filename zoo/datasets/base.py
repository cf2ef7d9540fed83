"""What every dataset source is: the read side of one dataset family, written once.

A source knows its family's layout on disk, reads the ids file of a split, pairs images with
their labels by name, applies a limit, and says where its samples came from (the result's
`provenance.dataset`). It does no model arithmetic: resizing and normalising for a network is the
adapter's `preprocess`, turning outputs into predictions its `postprocess`.

A source can be split deterministically (`shard(i, n)`: contiguous blocks in id order, so the
shards' predictions concatenated in shard order are the whole source's, in its order) and is opened
on a named split (`evaluation`, `calibration`, ...) as the model's manifest declares them."""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.fileutil import text_sha256


@dataclass(frozen=True)
class Sample:
    """One sample as its dataset stores it. `image` is None when only the label was read
    (scoring saved predictions needs no image). `info` holds what the family knows about the
    sample (original size, image id, file paths, ...)."""
    id: str
    image: Any
    label: Any
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Opened:
    """How a source was asked for (the record's provenance keeps it)."""
    root: Path
    split: str                      # the manifest's split name: evaluation, calibration, builtin ...
    ids_file: Path | None
    builtin: bool
    limit: int | None
    expected: int | None            # the full split's size (None: not the manifest's full split)
    name: str | None = None         # the dataset's own name of the split (val, val2017, ...)

    def limited(self, ids: list) -> list:
        """The first `limit` of `ids` (all without a limit): cut before any file of theirs is checked."""
        return ids[:self.limit] if self.limit is not None else ids


class Source(ABC):
    """A dataset split in a fixed id order. `read` raises ZooError for a missing or unreadable
    sample, never skips it."""

    family: str                     # "dsb2018", "cityscapes", "voc", "coco"
    # True when every split is a list of ids over one pool of files (DSB2018's stage1_train, VOC's
    # JPEGImages): the same id in two splits is the same sample. False when each split has its own
    # files (Cityscapes' and COCO's split folders): splits of different names share no sample.
    splits_share_files: bool = False

    @classmethod
    def listing(cls, root: Path, split: dict) -> Path | None:
        """The file a split's ids come from when no ids file is given (None: the family lists its
        samples otherwise, or has no such file): the calibration checks read it without opening."""
        return None

    def __init__(self, opened: Opened, ids: list[str]):
        self.opened = opened
        self.ids = list(ids)
        self.shard_of: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def root(self) -> Path:
        return self.opened.root

    @property
    def expected(self) -> int | None:
        """The full split's size when this is the whole of it, else None."""
        return self.opened.expected

    @property
    def complete(self) -> bool:
        """The whole declared split: only then is an accuracy comparable with a reference."""
        return self.opened.expected is not None and len(self.ids) == self.opened.expected and self.shard_of is None

    @abstractmethod
    def read(self, sample_id: str) -> Sample:
        """Image and label of one sample."""

    def read_label(self, sample_id: str) -> Sample:
        """The label only (image None); sources override this to skip decoding the image."""
        s = self.read(sample_id)
        return Sample(s.id, None, s.label, s.info)

    def preparation(self) -> dict:
        """What was done to the files before reading (a cached preparation, the label kind...)."""
        return {"step": "none: streamed from the original files"}

    def provenance(self) -> dict:
        """The record's `provenance.dataset` (schema/result.schema.json)."""
        o = self.opened
        out = {"name": self.family, "path": str(o.root), "split": f"{o.split} ({o.name})" if o.name else o.split,
               "ids_file": str(o.ids_file) if o.ids_file else None,
               "num_samples": len(self.ids), "expected_samples": o.expected,
               "ids_sha256": text_sha256("\n".join(self.ids)), "limit": o.limit, "builtin": o.builtin,
               "preparation": self.preparation()}
        if self.shard_of is not None:
            out["shard"] = {"index": self.shard_of[0], "count": self.shard_of[1]}
        return out

    def subset(self, ids: list[str]) -> "Source":
        """The same source over other ids (a subset of this one's, in the order given)."""
        unknown = [i for i in ids if i not in set(self.ids)]
        if unknown:
            raise ZooError(f"{self.family}: ids not in this source: {unknown[:5]}")
        other = copy.copy(self)
        other.ids = list(ids)
        return other

    def shard(self, index: int, count: int) -> "Source":
        """Shard `index` of `count`: contiguous blocks of the id order, sizes differing by at most
        one (the first len % count shards one longer). Every id is in exactly one shard, and the
        shards in index order give back the source's order."""
        if count < 1 or not 0 <= index < count:
            raise ZooError(f"shard {index} of {count}: need 0 <= index < count")
        base, extra = divmod(len(self.ids), count)
        start = index * base + min(index, extra)
        stop = start + base + (1 if index < extra else 0)
        other = self.subset(self.ids[start:stop])
        other.shard_of = (index, count)
        return other
