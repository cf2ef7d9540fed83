"""The guide end to end through the real CLI on the built-in COCO sample (5 real val2017 images):
record, COCO results JSON, drawings, the saved detections re-scored (`python -m zoo score`) to
the record's figures; bad input."""
from __future__ import annotations

import json

import pytest

from tests.zootest import assert_clean_failure
from zoo import schema
from zoo.metrics.coco import STAT_NAMES

from .conftest import SHARED_COCO, copy_builtin, last_json


@pytest.fixture(scope="module")
def e2e(run_zoo, checkpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    out = tmp / "results"
    proc = run_zoo("run", "--model", "nasfpn", "--weights", checkpoint, "--batch-sizes", "1,2", "--iters", "1",
                   "--warmup", "0", "--save-predictions", "--out", out, "--option", f"visualize={tmp / 'vis'}",
                   "--option", f"results_json={tmp / 'dets.json'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return last_json(proc), tmp, proc.stdout.strip().splitlines()[-1]


def test_record(e2e):
    rec, _, _ = e2e
    schema.validate(rec)
    e = rec["export"]
    assert e["output_names"] == ["output"] and e["parity"]["numerics_passed"] and e["parity"]["max_rel_diff"] < 1e-3
    v = rec["verify"]
    assert v["numerics_passed"] and v["batch_size"] == 1 and v["max_rel_diff"] < 1e-3
    # both sides' detections of the first image are matched; how many find no partner is not
    # asserted: on real images these random weights saturate every kept score at 1.0, so which
    # 100 boxes survive the top-k and NMS is float rounding (20-30% unmatched are seen)
    assert v["decisions"]["detections"]["decisions"] >= 100
    d = rec["provenance"]["dataset"]
    assert d["name"] == "coco" and d["num_samples"] == 5 and d["builtin"] is True
    assert d["preparation"]["annotations"].endswith("instances_val2017.json")
    (acc,) = rec["accuracy"]
    assert acc["metric"] == "map" and acc["reference"]["value"] == 0.405 and acc["passed"] is None
    assert set(STAT_NAMES) <= set(acc["metrics"]) and acc["metrics"]["num_detections"] > 0
    assert acc["consistent_across_batch_sizes"] is True
    assert len(acc["per_class"]) == 80
    scopes = {(p["batch_size"], p["scope"]) for p in rec["perf"] if p["status"] == "ok"}
    assert scopes == {(b, s) for b in (1, 2) for s in ("infer_only", "pipeline")}


def test_results_json_and_drawings(e2e):
    rec, tmp, _ = e2e
    dets = json.loads((tmp / "dets.json").read_text())
    assert len(dets) == rec["accuracy"][0]["metrics"]["num_detections"]
    # the rows the metric scored are the saved predictions (the last batch size's, the same here)
    assert dets == json.loads((tmp / "results" / "nasfpn" / rec["predictions"]["path"] / "detections.json").read_text())
    assert {d["image_id"] for d in dets} <= {128372, 404249, 343934, 194216, 464689}
    assert all(len(d["bbox"]) == 4 and d["score"] >= 0.05 for d in dets)
    drawn = sorted(p.name for p in (tmp / "vis").iterdir())
    assert drawn == sorted(f"{i:012d}.jpg" for i in (128372, 404249, 343934, 194216, 464689))


def test_saved_detections_rescore_to_the_record(run_zoo, e2e):
    rec, tmp, path = e2e
    assert rec["predictions"]["detections"] is True and rec["predictions"]["num_samples"] == 5
    proc = run_zoo("score", path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "every figure equals the record's" in proc.stdout


def test_shared_coco_sample_same_as_builtin(run_zoo, checkpoint, e2e, tmp_path):
    if not SHARED_COCO.is_dir():
        pytest.skip(f"{SHARED_COCO} not present (the shared datasets folder is optional)")
    proc = run_zoo("run", "--model", "nasfpn", "--weights", checkpoint, "--data", SHARED_COCO, "--batch-sizes", "1",
                   "--iters", "1", "--warmup", "0", "--out", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert last_json(proc)["accuracy"][0]["value"] == pytest.approx(e2e[0]["accuracy"][0]["value"], abs=1e-9)


def run(run_zoo, out, checkpoint, *args):
    return run_zoo("run", "--model", "nasfpn", "--weights", checkpoint, "--batch-sizes", "1", "--iters", "1",
                   "--warmup", "0", "--out", out, *args)


def test_missing_annotation_file(run_zoo, out, checkpoint, tmp_path):
    coco = copy_builtin(tmp_path / "coco")
    ann = coco / "annotations" / "instances_val2017.json"
    ann.unlink()
    assert_clean_failure(run(run_zoo, out, checkpoint, "--data", coco), out, ann, "annotation file not found")


def test_image_id_not_in_annotations(run_zoo, out, checkpoint, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("000000128372.jpg\n000000999999.jpg\n")
    assert_clean_failure(run(run_zoo, out, checkpoint, "--ids-file", ids), out, "image id 999999 is not in")


def test_missing_image(run_zoo, out, checkpoint, tmp_path):
    coco = copy_builtin(tmp_path / "coco")
    (coco / "val2017" / "000000343934.jpg").unlink()
    assert_clean_failure(run(run_zoo, out, checkpoint, "--data", coco), out, "000000343934.jpg", "missing")


def test_corrupt_image(run_zoo, out, checkpoint, tmp_path):
    coco = copy_builtin(tmp_path / "coco")
    img = coco / "val2017" / "000000194216.jpg"
    img.write_bytes(img.read_bytes()[:300])
    assert_clean_failure(run(run_zoo, out, checkpoint, "--data", coco), out, img.name, "unreadable or truncated")
