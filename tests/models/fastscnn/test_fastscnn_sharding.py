"""Issue 15 on the order-dependent Cityscapes figures: Fast-SCNN over a synthetic 3-image val tree
(real layout) with `--shards 2`: the guide's running averages (mIoU and pixAcc after each image,
averaged: they depend on the order) and the final confusion-matrix figures equal the
single-process run's to the last digit, because the driver replays every image's confusion
matrix in the id order."""
from __future__ import annotations

import pytest

from zoo.fileutil import file_digest

from .conftest import last_json, synthetic_tree

pytest.importorskip("ray", reason="Ray is not installed in this environment (invoke setup pins it)")

NAMES = ["frankfurt_000000_000294", "frankfurt_000001_007973", "munster_000102_000019"]


def test_sharded_running_averages_equal_single_process(run_zoo, checkpoint, tmp_path):
    tree = synthetic_tree(tmp_path / "cityscapes", NAMES)
    common = ("run", "--model", "fastscnn", "--weights", checkpoint, "--md5", file_digest(checkpoint, "md5"),
              "--data", tree, "--batch-sizes", "1", "--iters", "1", "--warmup", "0", "--no-peak")
    single = run_zoo(*common, "--out", tmp_path / "single")
    assert single.returncode == 0, single.stderr[-3000:]
    sharded = run_zoo(*common, "--out", tmp_path / "sharded", "--shards", "2", "--no-scaling-reference")
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    a, b = last_json(single), last_json(sharded)
    guide = {x["name"]: x for x in a["accuracy"]}["guide"]
    assert guide["metric"] == "running_avg_miou" and 0 < guide["value"] < 1
    assert [(x["name"], x["value"], x["metrics"], x["per_class"]) for x in b["accuracy"]] == \
        [(x["name"], x["value"], x["metrics"], x["per_class"]) for x in a["accuracy"]]
    assert [s["num_samples"] for s in b["sharding"]["shards"]] == [2, 1]
