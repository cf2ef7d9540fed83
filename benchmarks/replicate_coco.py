"""A longer COCO val2017 tree for pipeline measurements: the built-in images (or any COCO tree)
repeated under new ids, with their annotations copied to the new ids, in the real layout
(`val2017/<id:012d>.jpg`, `annotations/instances_val2017.json`).

With 5 built-in images a pipeline run is mostly start-up (the first batch's reading is never
overlapped); the guides measure over the whole 5000-image split. Images are hard-linked (no
extra disk); the accuracy of such a tree is the accuracy of the repeated images.

    python3 benchmarks/replicate_coco.py work/bench/coco30 --copies 6
    invoke bench --model nasfpn --weights work/bench/nasfpn_random.pth --data work/bench/coco30
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def replicate(src: Path, dest: Path, copies: int) -> int:
    ann = json.loads((src / "annotations" / "instances_val2017.json").read_text())
    if dest.exists():
        raise SystemExit(f"error: {dest}: already exists")
    (dest / "val2017").mkdir(parents=True)
    (dest / "annotations").mkdir()
    images, anns = [], []
    next_ann = max((a["id"] for a in ann["annotations"]), default=0) + 1
    by_image: dict[int, list] = {}
    for a in ann["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for k in range(copies):
        for im in ann["images"]:
            new = copy.deepcopy(im)
            new["id"] = im["id"] if k == 0 else 900_000_000 + k * 1_000_000 + im["id"] % 1_000_000
            new["file_name"] = f"{new['id']:012d}.jpg"
            target = dest / "val2017" / new["file_name"]
            try:
                os.link(src / "val2017" / im["file_name"], target)
            except OSError:
                shutil.copyfile(src / "val2017" / im["file_name"], target)
            images.append(new)
            for a in by_image.get(im["id"], []):
                b = dict(a, id=next_ann, image_id=new["id"])
                next_ann += 1
                anns.append(b)
    out = dict(ann, images=images, annotations=anns)
    (dest / "annotations" / "instances_val2017.json").write_text(json.dumps(out))
    return len(images)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("--src", type=Path, default=ROOT / "zoo" / "samples" / "coco")
    ap.add_argument("--copies", type=int, default=6)
    a = ap.parse_args(argv)
    n = replicate(a.src, a.dest, a.copies)
    print(f"{a.dest}: {n} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
