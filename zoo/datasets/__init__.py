"""Dataset sources, one module per dataset family (the read side only, written once):

  dsb2018     DSB2018 stage1_train (<id>/images/<id>.png + <id>/masks/*.png), prepared once
  cityscapes  Cityscapes leftImg8bit/<split>/<city>/ + gtFine/<split>/<city>/, paired by name
  voc         VOCdevkit/VOC2012 JPEGImages + SegmentationClass, ImageSets/Segmentation ids
  coco        COCO <split>/ images + annotations/instances_<split>.json

A model names its family and declares its splits in `model.yaml` (`data:`); `open_source` turns
that declaration plus the run's --data / --ids-file / --limit into a Source (zoo.datasets.base)."""
from __future__ import annotations

import importlib
from pathlib import Path

from zoo.datasets.base import Opened, Sample, Source
from zoo.errors import ZooError
from zoo.paths import builtin_data_path

FAMILIES = {
    "dsb2018": "zoo.datasets.dsb2018:DSB2018",
    "cityscapes": "zoo.datasets.cityscapes:Cityscapes",
    "voc": "zoo.datasets.voc:VOCSegmentation",
    "coco": "zoo.datasets.coco:CocoDetection",
}

__all__ = ["FAMILIES", "Opened", "Sample", "Source", "open_source", "source_class"]


def source_class(family: str) -> type[Source]:
    if family not in FAMILIES:
        raise ZooError(f"unknown dataset family {family!r} (known: {', '.join(sorted(FAMILIES))})")
    module, cls = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module), cls)


def _declared_split(manifest, ids_file: Path | None, split: str) -> str:
    """The split an ids file belongs to: `split`, unless the file is another declared split's own
    ids file (e.g. Fast-SCNN's guide_order.txt): then that split, with its expected size."""
    if ids_file is None:
        return split
    for name, spec in manifest.data["splits"].items():
        if spec.get("ids_file") and (manifest.dir / spec["ids_file"]).resolve() == Path(ids_file).resolve():
            return name
    return split


def open_source(manifest, data: Path | None, ids_file: Path | None, limit: int | None, cache: Path,
                split: str = "evaluation") -> Source:
    """The manifest's dataset on one of its declared splits.

    data None: the model's built-in sample (`data.builtin`: its family's in zoo/samples/ or a folder
    of the model's own, and optionally its ids file; zoo.paths.builtin_data_path). Otherwise `data`
    is the dataset root in its original layout and the split's ids come from --ids-file, else from
    the split's declared ids file, else from the family's own listing (VOC's ImageSets file, COCO's
    annotation order, Cityscapes' folders). An ids file that is a declared split's own selects that
    split. The split's expected size is kept only when the split's own ids are used (a user's ids
    file makes the run a subset, and so does a limit: `Source.complete` is then False and no
    accuracy is compared with a reference)."""
    spec = manifest.data
    splits = spec["splits"]
    if split not in splits:
        raise ZooError(f"{manifest.name}: no {split!r} split declared in its manifest "
                       f"(declared: {', '.join(sorted(splits))})")
    if data is not None:
        split = _declared_split(manifest, ids_file, split)
    split_spec = splits[split]
    declared = manifest.dir / split_spec["ids_file"] if split_spec.get("ids_file") else None
    if data is None:
        builtin = spec["builtin"]
        root = builtin_data_path(manifest.dir, builtin["path"]).resolve()
        own_key = "ids_file" if split == "evaluation" else f"{split}_ids_file"  # calibration_ids_file
        if ids_file is None and split != "evaluation" and not builtin.get(own_key):
            raise ZooError(f"{manifest.name}: its built-in sample has no {split} split (data.builtin.{own_key})")
        ids = Path(ids_file) if ids_file else (builtin_data_path(manifest.dir, builtin[own_key])
                                               if builtin.get(own_key) else None)
        opened = Opened(root=root, split="builtin" if split == "evaluation" else f"builtin {split}", ids_file=ids,
                        builtin=True, limit=limit, expected=None, name=split_spec.get("name"))
    else:
        root = Path(data)
        own = ids_file is None or (declared is not None and Path(ids_file).resolve() == declared.resolve())
        opened = Opened(root=root, split=split, ids_file=Path(ids_file) if ids_file else declared, builtin=False,
                        limit=limit, expected=split_spec.get("expected_samples") if own else None,
                        name=split_spec.get("name"))
    if not root.is_dir():
        raise ZooError(f"{root}: data folder not found")
    return source_class(spec["family"]).open(opened, split_spec, spec.get("source", {}), cache)
