"""The guide end to end through the real CLI: a full-size (1024x2048) synthetic Cityscapes tree, the
real 256x128 sample (accuracy checked against an in-process computation), the built-in demo."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo import schema
from zoo.datasets import open_source
from zoo.datasets.cityscapes import CLASSES
from zoo.fileutil import file_digest
from zoo.manifest import load_manifest
from zoo.metrics.segmentation import SegmentronMetric

from .conftest import SAMPLE_NAME, SHARED_PSEUDO, last_json, synthetic_tree

NAMES = ["frankfurt_000000_000294", "frankfurt_000001_007973", "munster_000102_000019"]


@pytest.fixture(scope="module")
def full_size_result(run_zoo, checkpoint, tmp_path_factory):
    tree = synthetic_tree(tmp_path_factory.mktemp("cityscapes"), NAMES)
    out = tmp_path_factory.mktemp("results")
    proc = run_zoo("run", "--model", "fastscnn", "--weights", checkpoint, "--md5", file_digest(checkpoint, "md5"),
                   "--data", tree, "--batch-sizes", "1,2", "--iters", "1", "--warmup", "0", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return last_json(proc), proc


def test_full_size_record(full_size_result, checkpoint):
    rec, proc = full_size_result
    schema.validate(rec)
    assert rec["status"] == "ok" and rec["model"]["name"] == "fastscnn"
    assert rec["model"]["options"] == {"num_classes": 19, "aux": True, "aux_outputs": True, "ppm": "exact",
                                       "export_hw": "auto"}
    w = rec["provenance"]["weights"]
    assert w["verified"] is True and w["builtin"] is False and w["sha256"] == file_digest(checkpoint)
    d = rec["provenance"]["dataset"]
    assert d["num_samples"] == 3 and d["expected_samples"] == 500 and d["split"] == "evaluation (val)"
    assert d["preparation"]["image_sizes"] == [[1024, 2048]] and d["preparation"]["order"] == "sorted by city then name"
    e = rec["export"]
    assert e["input_names"] == ["image"] and e["output_names"] == ["output1"] and e["opset"] == 17
    assert e["dynamic_batch"] is True and e["checker"] == "full_check_passed"
    assert e["parity"]["passed"] and e["parity"]["batch_size"] == 2 and e["parity"]["max_rel_diff"] < 1e-4
    scopes = {(p["batch_size"], p["scope"]) for p in rec["perf"] if p["status"] == "ok"}
    assert scopes == {(b, s) for b in (1, 2) for s in ("infer_only", "pipeline")}
    acc = {a["name"]: a for a in rec["accuracy"]}
    assert set(acc) == {"guide", "upstream"}
    assert acc["guide"]["metric"] == "running_avg_miou" and acc["upstream"]["metric"] == "miou"
    assert acc["guide"]["reference"]["value"] == 0.686667 and acc["upstream"]["reference"]["value"] == 0.689
    for a in acc.values():
        assert a["num_samples"] == 3 and a["passed"] is None and "subset" in a["description"]
        assert [c["class"] for c in a["per_class"]] == list(CLASSES) and len(a["per_class"]) == 19
        assert a["consistent_across_batch_sizes"] is True
        assert 0.0 <= a["value"] <= 1.0
        assert {"miou", "pix_acc", "pix_acc_true", "running_avg_miou", "running_avg_pix_acc"} <= set(a["metrics"])
    assert "running_avg_pix_acc_true" in acc["guide"]["metrics"]
    assert acc["guide"]["metrics"]["miou"] == pytest.approx(acc["upstream"]["value"], abs=1e-12)
    assert "evaluated in order: sorted by city then name" in acc["guide"]["description"]


def test_real_sample_accuracy_matches_in_process_computation(run_zoo, checkpoint, tmp_path):
    """The real 256x128 val image (shared/datasets/cityscapes_pseudo): the record's figures equal
    PyTorch + zoo's SegmentronMetric computed here on the same image and label."""
    if not (SHARED_PSEUDO / "leftImg8bit" / "val").is_dir():
        pytest.skip(f"the real Cityscapes sample is not available at {SHARED_PSEUDO} (../shared is optional)")
    proc = run_zoo("run", "--model", "fastscnn", "--weights", checkpoint, "--data", SHARED_PSEUDO,
                   "--batch-sizes", "1", "--iters", "1", "--warmup", "0", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_json(proc)
    schema.validate(rec)
    assert rec["provenance"]["dataset"]["num_samples"] == 1
    assert rec["provenance"]["dataset"]["preparation"]["image_sizes"] == [[128, 256]]   # the graph's size
    m = load_manifest("fastscnn")
    adapter = m.adapter()
    sample = open_source(m, SHARED_PSEUDO, None, None, tmp_path / "c").read(SAMPLE_NAME)
    net = adapter.build()
    adapter.load_weights(net, checkpoint)
    x, meta = adapter.preprocess(sample)
    target = adapter.target(sample)
    with torch.no_grad():
        logits = net.eval()(torch.from_numpy(x[None]))[0].numpy()
    ref = SegmentronMetric("upstream", "", CLASSES)
    ref.update(adapter.postprocess(logits[0], meta), target)
    acc = {a["name"]: a for a in rec["accuracy"]}
    assert acc["upstream"]["value"] == pytest.approx(ref.compute()["miou"], abs=1e-6)
    assert acc["upstream"]["metrics"]["pix_acc_true"] == pytest.approx(ref.compute()["pix_acc_true"], abs=1e-6)
    assert (target < 19).sum() > 10000 and len(np.unique(target[target < 19])) >= 5   # a real label map


def test_builtin_demo_torch_backend_guide_opset(run_zoo, checkpoint, tmp_path):
    """No --data: the built-in sample (zoo/samples/cityscapes); PyTorch runtime, the guide's opset 11."""
    proc = run_zoo("run", "--model", "fastscnn", "--weights", checkpoint, "--backend", "torch", "--opset", "11",
                   "--batch-sizes", "2", "--iters", "1", "--warmup", "0", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_json(proc)
    schema.validate(rec)
    assert rec["runtime"]["name"] == "torch" and rec["export"]["opset"] == 11 and rec["export"]["parity"]["passed"]
    d = rec["provenance"]["dataset"]
    assert d["builtin"] is True and d["num_samples"] == 1 and d["split"] == "builtin (val)"
    acc = {a["name"]: a for a in rec["accuracy"]}
    assert acc["guide"]["value"] == pytest.approx(acc["upstream"]["value"])   # one image: running = final
    assert all(a["passed"] is None for a in acc.values())


def test_saved_predictions_rescore_to_the_recorded_figures(run_zoo, checkpoint, tmp_path):
    """Both maps SegmenTron's metric needs are kept (the argmax and the argmax of the truncated
    logits, for its pixAcc); `python -m zoo score` gives every recorded figure of both protocols
    again, running averages included."""
    from pathlib import Path
    proc = run_zoo("run", "--model", "fastscnn", "--weights", checkpoint, "--save-predictions",
                   "--batch-sizes", "1", "--iters", "1", "--warmup", "0", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_json(proc)
    assert rec["predictions"]["maps"] == ["labels", "labels_trunc"] and rec["verify"]["passed"]
    path = Path(proc.stdout.strip().splitlines()[-1])
    score = run_zoo("score", path)
    assert score.returncode == 0 and "every figure equals the record's" in score.stdout, score.stderr[-2000:]
    assert "running_avg_miou=" in score.stdout
