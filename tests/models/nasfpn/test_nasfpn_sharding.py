"""Issue 15 on the COCO family: a sharded NAS-FPN run (2 Ray actors over the 5 built-in val2017
images) gathers every image's detections and evaluates them once: its COCO figures, the 12 stats
and the per-class AP, equal the single-process run's to the last digit."""
from __future__ import annotations

import pytest

from .conftest import last_json

pytest.importorskip("ray", reason="Ray is not installed in this environment (invoke setup pins it)")

FAST = ("--model", "nasfpn", "--batch-sizes", "2", "--iters", "1", "--warmup", "0", "--no-peak", "--time-budget", "1")


def test_sharded_coco_run_equals_single_process_run(run_zoo, checkpoint, tmp_path):
    single = run_zoo("run", *FAST, "--weights", checkpoint, "--out", tmp_path / "single")
    assert single.returncode == 0, single.stderr[-3000:]
    sharded = run_zoo("run", *FAST, "--weights", checkpoint, "--out", tmp_path / "sharded", "--shards", "2",
                      "--no-scaling-reference")
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    a, b = last_json(single), last_json(sharded)
    assert a["accuracy"][0]["metrics"]["num_detections"] > 0  # something to compare
    assert [(x["value"], x["metrics"], x["per_class"]) for x in b["accuracy"]] == \
        [(x["value"], x["metrics"], x["per_class"]) for x in a["accuracy"]]
    assert [s["num_samples"] for s in b["sharding"]["shards"]] == [3, 2]
