"""The proof of the plug points (issue 12): tests/fixtures/models/tinyseg, a model that lives
outside models/, is registered only through ZOO_MODEL_DIRS and its manifest, and reuses the
DSB2018 source and the binary metric. It runs end to end: export, parity, compile, verify,
inference, scoring, a valid record, kept predictions that re-score to the same figures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.zootest import assert_clean_failure, last_json

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "models"


def zoo(*args, tmp_path, plug=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZOO_CACHE": str(tmp_path / "cache")}
    env.pop("ZOO_MODEL_DIRS", None)
    if plug:
        env["ZOO_MODEL_DIRS"] = str(FIXTURES)
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)


def test_adapter_is_small_and_uses_public_plug_points_only():
    text = (FIXTURES / "tinyseg" / "adapter.py").read_text()
    assert len(text.splitlines()) <= 60
    imports = [line.split()[1] for line in text.splitlines() if line.startswith(("from ", "import "))]
    assert {i for i in imports if i.startswith("zoo")} <= {"zoo.adapter", "zoo.metrics.binary", "zoo.checkpoints"}
    assert not any(i.startswith("models") for i in imports)


def test_listed_only_through_the_plug_point(tmp_path):
    listed = zoo("models", tmp_path=tmp_path)
    assert listed.returncode == 0 and "tinyseg" in listed.stdout, listed.stderr
    assert "width=8" in listed.stdout  # its declared option
    hidden = zoo("models", tmp_path=tmp_path, plug=False)
    assert hidden.returncode == 0 and "tinyseg" not in hidden.stdout
    out = tmp_path / "out"
    assert_clean_failure(zoo("run", "--model", "tinyseg", "--out", str(out), tmp_path=tmp_path, plug=False),
                         out, "unknown model 'tinyseg'")


def test_runs_end_to_end_and_rescores(tmp_path):
    out = tmp_path / "out"
    proc = zoo("run", "--model", "tinyseg", "--batch-sizes", "1,2", "--no-peak", "--iters", "2", "--warmup", "1",
               "--time-budget", "1", "--save-predictions", "--out", str(out), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = last_json(proc)
    assert rec["model"]["name"] == "tinyseg" and rec["model"]["task"] == "binary_segmentation"
    assert rec["export"]["parity"]["passed"] and rec["verify"]["passed"]
    assert rec["verify"]["candidate"].startswith("onnxruntime") and rec["verify"]["decisions"]["mask"]["decisions"] == 2 * 96 * 96
    (acc,) = rec["accuracy"]
    assert acc["name"] == "tiny" and acc["num_samples"] == 4 and acc["consistent_across_batch_sizes"]
    assert 0.05 < acc["value"] < 0.95  # the calibrated random net predicts both classes: a real figure
    assert rec["provenance"]["dataset"]["name"] == "dsb2018" and rec["provenance"]["dataset"]["builtin"]
    kept = rec["predictions"]
    assert kept["num_samples"] == 4 and kept["maps"] == ["mask"] and not kept["detections"]
    result = next((out / "tinyseg").glob("*.json"))
    assert (result.parent / kept["path"] / "index.json").is_file()
    score = zoo("score", str(result), tmp_path=tmp_path)
    assert score.returncode == 0, score.stderr[-2000:]
    assert "every figure equals the record's" in score.stdout
    assert f"iou={acc['value']:.6g}" in score.stdout

    # a damaged prediction: not the files the record's digest vouches for (exit 2, nothing
    # scored); without the digest (a record before schema 1.10) it re-scores to another figure, exit 1
    import cv2
    png = sorted((result.parent / kept["path"] / "mask").glob("*.png"))[0]
    cv2.imwrite(str(png), 255 - cv2.imread(str(png), cv2.IMREAD_UNCHANGED))
    bad = zoo("score", str(result), tmp_path=tmp_path)
    assert bad.returncode == 2 and "not the ones the record vouches for" in bad.stderr, (bad.returncode, bad.stderr[-2000:])
    result.write_text(json.dumps({**rec, "predictions": {k: v for k, v in kept.items() if k not in ("sha256", "files")}}))
    bad = zoo("score", str(result), tmp_path=tmp_path)
    assert bad.returncode == 1 and "DIFFERS tiny.metrics.iou" in bad.stderr, (bad.returncode, bad.stderr[-2000:])


def test_adapter_options_are_read_only(tmp_path):
    os.environ["ZOO_MODEL_DIRS"] = str(FIXTURES)
    try:
        from zoo.manifest import load_manifest
        adapter = load_manifest("tinyseg").adapter(width="4")
    finally:
        os.environ.pop("ZOO_MODEL_DIRS")
    assert adapter.options["width"] == 4
    with pytest.raises(TypeError):
        adapter.options["width"] = 5
    assert json.dumps(dict(adapter.options)) == '{"width": 4}'


def test_a_precision_without_a_declared_tolerance_is_refused(tmp_path):
    """tinyseg declares a verify tolerance for fp32 only: bf16 on a runtime that runs it is still
    refused, before any work (a verify without a tolerance would prove nothing)."""
    out = tmp_path / "out"
    assert_clean_failure(zoo("run", "--model", "tinyseg", "--runtime", "torch", "--precision", "bf16", "--out", str(out),
                             tmp_path=tmp_path),
                         out, "--precision bf16: tinyseg: no verify tolerance declared for precision 'bf16' (declared: fp32)")
