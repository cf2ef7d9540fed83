"""A synthetic COCO root in the real layout (val2017/*.jpg + annotations/instances_val2017.json with
the 80 real categories): more images and sizes than the sample (portrait, landscape, small,
larger than 640), a partial last batch, an ids file of file names, through the real CLI."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from zoo import schema

from .conftest import BUILTIN, last_json

SIZES = [(640, 480), (480, 640), (300, 200), (1024, 683), (500, 500), (640, 360)]


def write_coco(root, seed=0):
    rng = np.random.default_rng(seed)
    cats = json.loads((BUILTIN / "annotations" / "instances_val2017.json").read_text())["categories"]
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    for k, (w, h) in enumerate(SIZES):
        iid = 900000 + k
        yy, xx = np.mgrid[0:h, 0:w]
        rgb = np.stack([(127 + 120 * np.sin(xx / w * (3 + k) + c) * np.cos(yy / h * (2 + c))) for c in range(3)], -1)
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(root / "val2017" / f"{iid:012d}.jpg", quality=90)
        images.append({"id": iid, "file_name": f"{iid:012d}.jpg", "width": w, "height": h})
        for j in range(3):
            bw, bh = float(rng.uniform(20, w / 2)), float(rng.uniform(20, h / 2))
            x, y = float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh))
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": int(rng.choice([c["id"] for c in cats])),
                         "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0,
                         "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]})
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def test_synthetic_coco_tree(run_zoo, checkpoint, tmp_path):
    root = write_coco(tmp_path / "coco")
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{900000 + k:012d}.jpg\n" for k in (5, 0, 1, 2, 3)))  # a subset, own order
    proc = run_zoo("run", "--model", "nasfpn", "--weights", checkpoint, "--data", root, "--ids-file", ids,
                   "--batch-sizes", "4", "--iters", "1", "--warmup", "0", "--out", tmp_path / "results")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_json(proc)
    schema.validate(rec)
    d = rec["provenance"]["dataset"]
    assert d["num_samples"] == 5 and d["builtin"] is False
    assert d["expected_samples"] is None  # a user's ids file: a subset, whatever its length
    (pipe,) = [p for p in rec["perf"] if p["scope"] == "pipeline"]
    assert pipe["num_samples"] == 5  # one full batch of 4 and a partial one
    (acc,) = rec["accuracy"]
    assert acc["num_samples"] == 5 and "subset" in acc["description"] and acc["passed"] is None
    assert 0.0 <= acc["value"] <= 1.0
