"""`invoke compare BASELINE NEW`: accuracy deltas, throughput ratios, exit codes, on constructed
result records (the schema-valid fixture, edited)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.compare import compare, run_compare
from runner.validate import ResultError
from tests.records import restated

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "result_example.json"


def base() -> dict:
    return json.loads(FIXTURE.read_text())


def write(folder: Path, name: str, rec: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(rec))
    return folder


def scaled(rec: dict, acc: dict | None = None, thr: float = 1.0, bs_fail: int | None = None) -> dict:
    rec = copy.deepcopy(rec)
    for a in rec["accuracy"]:
        if acc and a["name"] in acc:
            a["value"] = acc[a["name"]]
    for p in rec["perf"]:
        if p["status"] == "ok":
            p["throughput"] *= thr
        if bs_fail is not None and p["batch_size"] == bs_fail:
            p.update(status="failed", error="out of memory", throughput=None)
    rec["timestamps"]["finished"] = "2026-11-23T00:00:00Z"
    return restated(rec)  # its derived figures too: the readers refuse a record that contradicts itself


def by_item(c):
    return {(r.kind, r.item): r for r in c.rows}


def test_identical_sets_pass():
    c = compare([base()], [base()])
    assert c.regressions == []
    rows = by_item(c)
    assert rows[("accuracy", "guide iou")].change == 0.0 and rows[("accuracy", "guide iou")].status == "ok"
    assert rows[("throughput", "bs4 infer_only")].change == pytest.approx(1.0)
    # bs64 failed in both: not a comparison row
    assert ("throughput", "bs64 infer_only") not in rows


def test_accuracy_drop_threshold_is_relative():
    b = base()  # guide 0.8369
    ok = compare([b], [scaled(b, {"guide": 0.8369 * 0.991})])
    assert ok.regressions == []
    bad = compare([b], [scaled(b, {"guide": 0.8369 * 0.985})])
    (r,) = bad.regressions
    assert r.kind == "accuracy" and r.item == "guide iou" and r.change == pytest.approx(0.015)
    better = by_item(compare([b], [scaled(b, {"upstream": 0.86})]))[("accuracy", "upstream iou")]
    assert better.status == "improved"
    assert compare([b], [scaled(b, {"guide": 0.8369 * 0.985})], max_accuracy_drop=0.02).regressions == []


def test_throughput_drop_and_failed_batch():
    b = base()
    assert compare([b], [scaled(b, thr=0.92)]).regressions == []
    slow = compare([b], [scaled(b, thr=0.85)])
    assert {r.item for r in slow.regressions} == {f"bs{n} {s}" for n in (1, 4, 16) for s in ("infer_only", "pipeline")}
    assert all(r.change == pytest.approx(0.85) for r in slow.regressions)
    failed = compare([b], [scaled(b, bs_fail=16)])
    assert {(r.item, r.status) for r in failed.regressions} == {("bs16 infer_only", "failed"), ("bs16 pipeline", "failed")}
    assert "out of memory" in failed.regressions[0].note


def test_missing_run_and_newest_record_wins():
    b = base()
    other = copy.deepcopy(b)
    other["runtime"]["name"] = "torch"
    c = compare([b, other], [b])
    (r,) = c.regressions
    assert r.kind == "missing" and "/ torch /" in r.key
    assert compare([b, other], [b], allow_missing=True).regressions == []
    old_bad = scaled(b, {"guide": 0.5})
    old_bad["timestamps"]["finished"] = "2020-01-01T00:00:00Z"
    assert compare([b], [old_bad, b]).regressions == []  # the newer record of the key is used
    assert [r.status for r in compare([b], [b, other]).rows if r.kind == "missing"] == ["new"]


def test_cli_exit_codes_and_outputs(tmp_path):
    b = base()
    write(tmp_path / "base", "r.json", b)
    write(tmp_path / "same", "r.json", b)
    write(tmp_path / "worse", "r.json", scaled(b, {"guide": 0.80}))

    def invoke(*args):
        return subprocess.run([sys.executable, "-m", "invoke", "compare", *map(str, args)], cwd=ROOT,
                              capture_output=True, text=True)

    ok = invoke(tmp_path / "base", tmp_path / "same", "--out", tmp_path / "cmp")
    assert ok.returncode == 0, ok.stderr
    assert "| unetpp / upsample=bilinear / onnxruntime" in ok.stdout and "Regressions: **0**" in ok.stdout
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["kind"] == "zoo.comparison" and saved["regressions"] == 0 and saved["rows"]
    assert (tmp_path / "cmp" / "compare.md").read_text().startswith("# Comparison")
    bad = invoke(tmp_path / "base", tmp_path / "worse")
    assert bad.returncode == 1 and "1 regression(s)" in bad.stderr and "regression" in bad.stdout
    assert invoke(tmp_path / "base", tmp_path / "worse", "--max-accuracy-drop", "0.5").returncode == 0
    missing = invoke(tmp_path / "base", tmp_path / "nowhere")
    assert missing.returncode == 2 and "results folder does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    assert "no result records found" in invoke(tmp_path / "base", tmp_path / "empty").stderr


def test_invalid_record_and_thresholds(tmp_path):
    rec = base()
    del rec["perf"]
    write(tmp_path / "bad", "r.json", rec)
    with pytest.raises(ResultError, match="does not match"):
        run_compare(FIXTURE, tmp_path / "bad")
    with pytest.raises(ResultError, match="thresholds"):
        compare([base()], [base()], max_throughput_drop=1.5)


def test_accuracy_only_matches_another_machine_and_ignores_throughput():
    b = base()
    elsewhere = scaled(b, thr=0.3)           # a slower machine: throughput is not comparable
    elsewhere["device"]["name"] = "Some Other CPU @ 2.0GHz"
    strict = compare([b], [elsewhere])       # by default the device name is part of the key
    assert {r.status for r in strict.regressions} == {"missing"}
    c = compare([b], [elsewhere], accuracy_only=True)
    assert c.regressions == [] and c.thresholds["accuracy_only"] is True
    assert {r.kind for r in c.rows} == {"accuracy"} and all(":any" in r.key for r in c.rows)
    worse = scaled(elsewhere, {"guide": 0.8369 * 0.98})
    (r,) = compare([b], [worse], accuracy_only=True).regressions
    assert r.item == "guide iou" and r.change == pytest.approx(0.02)
    gpu = copy.deepcopy(elsewhere)
    gpu["device"]["type"] = "cuda"          # the device type stays in the key
    assert {r.status for r in compare([b], [gpu], accuracy_only=True).regressions} == {"missing"}


def test_the_committed_ci_baseline_is_valid_and_from_built_in_data():
    from runner.validate import load_results
    recs = load_results(ROOT / "benchmarks" / "baselines")
    assert recs, "the CI gate's baseline records are missing"
    for rec in recs:
        assert rec["provenance"]["dataset"]["builtin"] is True and rec["provenance"]["weights"]["builtin"] is True
        assert all(a["num_samples"] > 0 for a in rec["accuracy"])


def test_compare_json_is_strict_json():
    """Derived figures with no value (a ratio over zero) are written as null, never a bare NaN."""
    import json
    from zoo.schema import finite_or_none
    assert finite_or_none({"a": [1.0, float("nan"), {"b": float("-inf")}], "c": "x"}) == {"a": [1.0, None, {"b": None}], "c": "x"}
    json.dumps(finite_or_none([float("inf")]), allow_nan=False)


def test_a_failed_verify_in_the_new_run_is_a_regression():
    """Schema 1.6: the runtime under test beyond the model's tolerance of PyTorch fails the gate,
    even with equal accuracy (and in accuracy-only mode); a passed verify adds no row."""
    b = base()
    comparison = {"reference": "torch (the loaded PyTorch module, fp32)", "candidate": "openvino 2025.1",
                  "batch_size": 4, "precision": "fp32", "max_abs_diff": 0.5, "max_rel_diff": 0.02,
                  "mean_abs_diff": 0.01, "rtol": 1e-4, "atol": 1e-5, "numerics_passed": False,
                  "decisions": {"guide": {"flips": 300, "decisions": 36864, "fraction": 300 / 36864}},
                  "decision_flips": 300, "max_flip_fraction": 1e-4, "passed": False}
    bad = scaled(b)
    bad["schema_version"] = "1.6"
    bad["verify"] = comparison
    for accuracy_only in (False, True):
        status, r = compare([b], [bad], accuracy_only=accuracy_only).regressions
        assert r.item == "verify vs PyTorch" and r.status == "failed" and "300 decision flips" in r.note
        # a 1.6 record said ok over a failed verify: read as invalid (zoo.checks.status_of), a regression by status too
        assert status.item == "record status" and status.status == "failed"
        assert status.note.startswith("invalid: verify failed: openvino 2025.1 vs torch (fp32): max_rel_diff 0.02")
    good = copy.deepcopy(bad)
    good["verify"].update(passed=True, numerics_passed=True, decision_flips=0, max_rel_diff=1e-6)
    assert compare([b], [good]).regressions == []
    assert ("accuracy", "verify vs PyTorch") not in by_item(compare([b], [good]))
    # the records are schema-valid as constructed
    from runner.validate import validate_record
    validate_record(bad)


def reduced(rec: dict, values: dict, fp32: dict, criterion: str = "accuracy_delta", fidelity: float = 0.998,
            tolerance: float = 0.01) -> dict:
    """A bf16 record of the fixture's key with a schema-1.7 `reduced_precision` block: its
    accuracy `values`, the fp32 baseline it ran `fp32`, and `passed` by the criterion's rule."""
    rec = scaled(rec, values)
    rec["schema_version"], rec["precision"] = "1.7", "bf16"
    delta = []
    for a in rec["accuracy"]:
        ref = fp32[a["name"]]
        drop = (ref - a["value"]) / ref
        delta.append({"name": a["name"], "metric": a["metric"], "value": a["value"], "fp32": ref,
                      "delta": a["value"] - ref, "relative_drop": drop, "passed": drop <= tolerance})
    fid = {"metric": "fidelity_iou", "value": fidelity, "description": "d", "num_samples": 134,
           "per_key": [{"key": "guide", "metric": "fidelity_iou", "value": fidelity}]}
    passed = all(d["passed"] for d in delta) if criterion == "accuracy_delta" else fidelity >= 1 - tolerance
    rec["reduced_precision"] = {
        "requested": "bf16", "executed": "bf16", "calibration": None,
        "fp32_baseline": {"runtime": "openvino 2026.4.1 (fp32)", "batch_size": 1, "throughput_samples_per_s": 12.0,
                          "accuracy": [{"name": k, "metric": "iou", "value": v} for k, v in fp32.items()]},
        "delta": delta, "fidelity": [fid], "tolerance": tolerance, "criterion": criterion,
        "trained_weights": criterion == "accuracy_delta", "passed": passed}
    return rec


def test_a_reduced_precision_run_that_failed_its_own_fp32_baseline_is_a_regression():
    """Schema 1.7: judged in the new set alone (no bf16 baseline record needed): the accuracy delta
    to its own fp32 pass for a trained checkpoint, the fidelity to fp32 for other weights."""
    from runner.validate import validate_record
    b = base()
    fp32 = {"guide": 0.8369, "upstream": 0.84}
    good = reduced(b, {"guide": 0.8349, "upstream": 0.8390}, fp32)
    validate_record(good)
    c = compare([b], [b, good])
    assert c.regressions == []
    row = by_item(c)[("accuracy", "bf16 vs its fp32 baseline (accuracy_delta)")]
    assert row.status == "ok" and row.change == pytest.approx((0.8369 - 0.8349) / 0.8369)
    bad = reduced(b, {"guide": 0.8200, "upstream": 0.8390}, fp32)
    assert bad["reduced_precision"]["passed"] is False
    validate_record(bad)
    for accuracy_only in (False, True):
        regs = compare([b], [bad], accuracy_only=accuracy_only).regressions
        (r,) = [r for r in regs if r.item.startswith("bf16 vs")]
        assert r.status == "regression" and r.new == 0.82 and r.baseline == 0.8369 and "guide beyond" in r.note
    # untrained weights: the fidelity decides, whatever the (meaningless) accuracy deltas
    fid_bad = reduced(b, {"guide": 0.8369, "upstream": 0.84}, fp32, criterion="fidelity_to_fp32", fidelity=0.97)
    validate_record(fid_bad)
    (r,) = compare([b], [b, fid_bad]).regressions
    assert r.item == "bf16 vs its fp32 baseline (fidelity_to_fp32)" and r.change == pytest.approx(0.03)
    fid_ok = reduced(b, {"guide": 0.5, "upstream": 0.84}, {"guide": 0.5, "upstream": 0.84},
                     criterion="fidelity_to_fp32", fidelity=0.995)
    assert [r for r in compare([fid_ok], [fid_ok]).regressions] == []


def test_a_reduced_precision_run_far_below_the_sets_fp32_run_is_a_regression():
    """Within one result set: the bf16 run of a model / variant / runtime / device against the fp32
    run of the same key, per protocol, with the accuracy threshold (also without a
    reduced_precision block, as records before 1.7)."""
    b = base()
    bf16 = scaled(b, {"guide": 0.8369 * 0.995})
    bf16["precision"] = "bf16"
    c = compare([b, bf16], [b, bf16])
    row = by_item(c)[("accuracy", "guide iou vs the fp32 run")]
    assert row.status == "ok" and row.change == pytest.approx(0.005) and c.regressions == []
    worse = scaled(b, {"guide": 0.8369 * 0.98})
    worse["precision"] = "bf16"
    (r,) = compare([b], [b, worse]).regressions  # no bf16 run in the baseline set: only the set's own fp32 run
    assert r.item == "guide iou vs the fp32 run" and r.change == pytest.approx(0.02) and r.baseline == 0.8369
    loose = by_item(compare([b], [b, worse], max_accuracy_drop=0.03))
    assert loose[("accuracy", "guide iou vs the fp32 run")].status == "ok"
    other_runtime = copy.deepcopy(worse)
    other_runtime["runtime"]["name"] = "torch"  # no fp32 torch run in the set: nothing to compare with
    assert not [r for r in compare([b], [b, other_runtime]).rows if "vs the fp32 run" in r.item]
