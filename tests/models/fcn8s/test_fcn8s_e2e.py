"""The guide end to end through the real CLI on real VOC images (built-in sample) and a
synthetic VOCdevkit tree; the upstream protocol with each image at its own size; the saved label
maps re-scored (`python -m zoo score`) to the record's figures."""
from __future__ import annotations

import numpy as np
import pytest

from models.fcn8s.adapter import CLASSES
from zoo import schema
from zoo.fileutil import file_digest

from .conftest import SHARED_VOC, last_json, write_voc

IDS = ["2008_000001", "2008_000002", "2008_000003"]


@pytest.fixture(scope="module")
def guide_run(run_zoo, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    proc = run_zoo("run", "--model", "fcn8s", "--weights", checkpoint, "--batch-sizes", "1,2", "--iters", "1",
                   "--warmup", "0", "--save-predictions", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return last_json(proc), proc.stdout.strip().splitlines()[-1]


def test_guide_record_on_builtin_data(guide_run, checkpoint):
    rec, _ = guide_run
    schema.validate(rec)
    assert rec["model"]["options"] == {"protocol": "guide", "argmax_in_graph": False}
    w = rec["provenance"]["weights"]
    assert w["sha256"] == file_digest(checkpoint) and w["builtin"] is False
    d = rec["provenance"]["dataset"]
    assert d["name"] == "voc" and d["num_samples"] == 3 and d["builtin"] is True
    e = rec["export"]
    assert e["input_names"] == ["input"] and e["output_names"] == ["output"]
    assert e["dynamic_spatial"] is False and e["checker"] == "full_check_passed"
    assert e["parity"]["passed"] and e["parity"]["max_rel_diff"] < 1e-3
    v = rec["verify"]
    assert v["passed"] and v["batch_size"] == 1 and v["max_rel_diff"] < 1e-3
    # the label maps at the original size (2007_000032: 500x281): ties of near-equal logits only
    assert v["decisions"]["labels"]["decisions"] == 500 * 281 and v["decisions"]["labels"]["fraction"] <= 2e-4
    scopes = {(p["batch_size"], p["scope"]) for p in rec["perf"] if p["status"] == "ok"}
    assert scopes == {(b, s) for b in (1, 2) for s in ("infer_only", "pipeline")}
    (acc,) = rec["accuracy"]
    assert acc["name"] == "guide" and acc["metric"] == "miou" and acc["num_samples"] == 3
    assert acc["reference"]["value"] == 0.6901 and acc["passed"] is None  # a subset: no verdict
    assert acc["consistent_across_batch_sizes"] is True
    assert [c["class"] for c in acc["per_class"]] == list(CLASSES)
    assert set(acc["metrics"]) >= {"miou", "macc", "aacc", "num_samples"}
    assert 0 <= acc["metrics"]["aacc"] <= 1


def test_saved_label_maps_rescore_to_the_record(run_zoo, guide_run):
    rec, path = guide_run
    assert rec["predictions"]["maps"] == ["labels"] and rec["predictions"]["num_samples"] == 3
    proc = run_zoo("score", path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "every figure equals the record's" in proc.stdout


def test_upstream_protocol_dynamic_sizes(run_zoo, checkpoint, tmp_path):
    tree = write_voc(tmp_path / "VOCdevkit", IDS, sizes={"2008_000001": (375, 500), "2008_000002": (500, 333),
                                                          "2008_000003": (281, 500)})
    out = tmp_path / "results"
    proc = run_zoo("run", "--model", "fcn8s", "--weights", checkpoint, "--data", tree, "--option", "protocol=upstream",
                   "--iters", "1", "--warmup", "0", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_json(proc)
    schema.validate(rec)
    assert rec["export"]["dynamic_spatial"] is True
    assert sorted({p["batch_size"] for p in rec["perf"]}) == [1]  # the sweep cut to batch 1
    (acc,) = rec["accuracy"]
    assert acc["name"] == "upstream" and acc["reference"]["value"] == 0.67085
    assert rec["provenance"]["dataset"]["expected_samples"] == 1449 and acc["num_samples"] == 3


def test_argmax_in_graph_gives_the_same_score(run_zoo, checkpoint, guide_run, tmp_path):
    out = tmp_path / "results"
    proc = run_zoo("run", "--model", "fcn8s", "--weights", checkpoint, "--option", "argmax_in_graph=true",
                   "--batch-sizes", "1", "--iters", "1", "--warmup", "0", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_json(proc)
    assert rec["accuracy"][0]["value"] == pytest.approx(guide_run[0]["accuracy"][0]["value"], abs=2e-3)
    # labels out of the graph: the runtime's label maps against PyTorch's, pixel by pixel
    assert rec["verify"]["decisions"]["labels"]["fraction"] <= 2e-4


def test_shared_voc_sample(run_zoo, checkpoint, tmp_path):
    if not SHARED_VOC.is_dir():
        pytest.skip(f"{SHARED_VOC} not present (the shared datasets folder is optional)")
    out = tmp_path / "results"
    proc = run_zoo("run", "--model", "fcn8s", "--weights", checkpoint, "--data", SHARED_VOC, "--batch-sizes", "1",
                   "--iters", "1", "--warmup", "0", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_json(proc)
    assert rec["provenance"]["dataset"]["num_samples"] == 1  # the real val.txt lists 2007_000033 only
    assert np.isfinite(rec["accuracy"][0]["value"])
