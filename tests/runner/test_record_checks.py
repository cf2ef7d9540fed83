"""The record checker (zoo.checks through runner.validate.load_result) and the invalid status on
the host side (issue 21): a real run's record (the committed CI baseline) with one figure edited
is refused by `python -m runner.report` and `invoke compare` (exit 2, one line naming the file and
the rule, nothing written); an invalid run is a badge and marked figures in the report, a
regression in compare, and the INVALID line first and exit 1 at the end of `invoke run`."""
from __future__ import annotations

import re

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "benchmarks" / "baselines" / "unetpp-onnxruntime-20261122T131602Z.json"  # a real run's record


def real() -> dict:
    return json.loads(BASELINE.read_text())


def py(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120)


def put(folder: Path, rec: dict, name: str = "r.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(rec, indent=1))
    return folder / name


def acc(change):
    return lambda r: change(r["accuracy"][0])


def perf(i: int, **fields):
    return lambda r: r["perf"][i].update(fields)


def scale(i: int, key: str, factor: float):
    return lambda r: r["perf"][i].update({key: r["perf"][i][key] * factor})


def both_counts(a):
    a["num_samples"] = 15
    a["metrics"]["num_samples"] = 15.0


def fewer_piped(r):
    p = r["perf"][1]
    p.update(num_samples=15, throughput=15 / p["wall_s"])


# (where, rule, edit) on the real record: perf/0 is bs1 infer_only, perf/1 bs1 pipeline
EDITS = {
    "value": ("accuracy/0 (guide)", "value == metrics[metric]", acc(lambda a: a.update(value=0.99))),
    "metrics count": ("accuracy/0 (guide)", "num_samples == metrics.num_samples",
                      acc(lambda a: a["metrics"].update(num_samples=15.0))),
    "samples": ("accuracy/0 (guide)", "num_samples == provenance.dataset.num_samples", acc(both_counts)),
    "delta": ("accuracy/0 (guide)", "reference.delta == value - reference.value",
              acc(lambda a: a["reference"].update(delta=0.01))),
    "relative drop": ("accuracy/0 (guide)", "reference.relative_drop == (reference.value - value) / reference.value",
                      acc(lambda a: a["reference"].update(relative_drop=0.0))),
    "passed false": ("accuracy/0 (guide)", "passed == (reference.relative_drop <= reference.tolerance)",
                     acc(lambda a: a.update(passed=False))),
    "passed on a subset": ("accuracy/0 (guide)", "no pass/fail verdict on a subset of the split",
                           acc(lambda a: a.update(passed=True))),
    "consistent": ("accuracy/0 (guide)", "consistent_across_batch_sizes == (max_spread_across_batch_sizes <= 0.0001)",
                   acc(lambda a: a.update(max_spread_across_batch_sizes=0.01))),
    "accuracy batch": ("accuracy/0 (guide)", "batch_size is one whose pipeline ran", acc(lambda a: a.update(batch_size=2))),
    "infer throughput": ("perf/0 (bs1 infer_only)", "throughput == 1000 * batch_size / latency_ms.mean",
                         scale(0, "throughput", 1.5)),
    "infer samples": ("perf/0 (bs1 infer_only)", "num_samples == iterations * batch_size", perf(0, num_samples=7)),
    "latency count": ("perf/0 (bs1 infer_only)", "latency_ms.count == iterations",
                      lambda r: r["perf"][0]["latency_ms"].update(count=1)),
    "pipeline throughput": ("perf/1 (bs1 pipeline)", "throughput == num_samples / wall_s", scale(1, "throughput", 0.5)),
    "pipeline samples": ("perf/1 (bs1 pipeline)", "num_samples == provenance.dataset.num_samples", fewer_piped),
    "pipeline vs infer": ("perf/1 (bs1 pipeline)", "pipeline_vs_infer == throughput / infer_only throughput",
                          perf(1, pipeline_vs_infer=1.0)),
    "gflops": ("perf/0 (bs1 infer_only)", "gflops == export.cost.flops_per_sample * throughput / 1e9",
               scale(0, "gflops", 2.0)),
}


def test_the_real_record_keeps_every_rule(tmp_path):
    proc = py("-m", "runner.report", put(tmp_path / "results", real()).parent, "--out", tmp_path / "rep")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rep" / "report.md").is_file()


@pytest.mark.parametrize("name", list(EDITS))
def test_report_refuses_a_real_record_with_one_figure_edited(tmp_path, name):
    where, rule, edit = EDITS[name]
    rec = real()
    edit(rec)
    path = put(tmp_path / "results", rec)
    proc = py("-m", "runner.report", path.parent, "--out", tmp_path / "rep")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: breaks a record rule at {where}: {rule} ("), line
    assert not (tmp_path / "rep").exists()  # nothing written


def test_compare_refuses_an_edited_record_with_exit_2(tmp_path):
    rec = real()
    rec["accuracy"][1]["value"] = 0.99  # the headline figure, as a hand edit would change it
    path = put(tmp_path / "new", rec)
    proc = py("-m", "invoke", "compare", BASELINE.parent, path.parent)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert f"{path}: breaks a record rule at accuracy/1 (upstream): value == metrics[metric]" in last
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- verify, reduced precision, status

VERIFY = {"reference": "torch (the loaded PyTorch module, fp32)", "candidate": "onnxruntime 1.31.1", "precision": "fp32",
          "batch_size": 4, "max_abs_diff": 2.5, "max_rel_diff": 8.1, "mean_abs_diff": 0.3, "rtol": 1e-4, "atol": 1e-5,
          "passed": False, "decision_flips": 4424,
          "decisions": {"guide": {"flips": 4424, "decisions": 36864, "fraction": 4424 / 36864},
                        "upstream": {"flips": 0, "decisions": 36864, "fraction": 0.0}},
          "max_flip_fraction": 1e-4, "numerics_passed": False}
REASON = ("verify failed: onnxruntime 1.31.1 vs torch (fp32): max_rel_diff 8.1 > rtol 0.0001 (atol 1e-05); "
          "guide: 12.00% decisions flipped > 0.01%")


def current(verify: dict | None = None, status: str | None = None) -> dict:
    """The real record as schema 1.10 with a verify block, its status judged as a run judges it."""
    from zoo.stages.record import judged
    rec = real()
    rec.update(schema_version="1.10", verify=copy.deepcopy(verify or {**VERIFY, "passed": True, "numerics_passed": True,
                                                                     "decision_flips": 0, "decisions": {}}))
    rec = judged(rec)
    if status is not None:
        rec["status"] = status
    return rec


def test_an_invalid_record_is_judged_with_its_reason():
    rec = current(VERIFY)
    assert rec["status"] == "invalid" and rec["error"] == REASON
    from runner.validate import validate_record
    validate_record(rec)


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(status="ok", error=None), "does not match result.schema.json at verify/passed: True was expected"),
    (lambda r: r.update(error=None), "does not match result.schema.json at error"),
    (lambda r: r["verify"]["decisions"]["guide"].update(fraction=0.01), "at verify/decisions/guide: fraction == flips / decisions"),
    (lambda r: r["verify"].update(decision_flips=1), "at verify: decision_flips == the decisions' flips added"),
    (lambda r: r["verify"].update(max_flip_fraction=0.5, numerics_passed=True),
     "at verify: passed == numerics_passed and every decision fraction <= max_flip_fraction"),
])
def test_verify_and_status_rules(tmp_path, change, message):
    rec = current(VERIFY)
    change(rec)
    path = put(tmp_path / "results", rec)
    proc = py("-m", "runner.report", path.parent, "--out", tmp_path / "rep")
    assert proc.returncode == 2 and proc.stderr.strip().startswith(f"error: {path}: "), proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_status_invalid_needs_a_failed_check():
    from runner.validate import ResultError, validate_record
    with pytest.raises(ResultError, match="at status: status invalid only over a failed verify or reduced_precision"):
        validate_record(current(status="invalid") | {"error": "made up"}, "x.json")


def reduced(rec: dict, fidelity: float, tolerance: float = 0.01) -> dict:
    """A schema-1.7 fidelity-judged bf16 block consistent with the record's accuracy and perf."""
    infer = rec["perf"][0]
    fp32 = [{"name": a["name"], "metric": a["metric"], "value": a["value"]} for a in rec["accuracy"]]
    rec["precision"] = "bf16"
    rec["reduced_precision"] = {
        "requested": "bf16", "executed": "bf16", "calibration": None,
        "fp32_baseline": {"runtime": "onnxruntime (fp32)", "batch_size": 1, "throughput_samples_per_s": 10.0,
                          "speedup": infer["throughput"] / 10.0, "accuracy": fp32},
        "delta": [{**f, "fp32": f["value"], "delta": 0.0, "relative_drop": 0.0, "passed": True} for f in fp32],
        "fidelity": [{"metric": "fidelity_iou", "value": fidelity, "description": "d", "num_samples": 16,
                      "per_key": [{"key": "guide", "metric": "fidelity_iou", "value": fidelity}]}],
        "tolerance": tolerance, "criterion": "fidelity_to_fp32", "trained_weights": False,
        "passed": fidelity >= 1 - tolerance}
    return rec


@pytest.mark.parametrize("change, message", [
    (lambda rp: rp.update(passed=True), "at reduced_precision: passed follows its criterion (fidelity_to_fp32)"),
    (lambda rp: rp["delta"][0].update(value=0.5), "at reduced_precision/delta/0 (guide): value == the accuracy's value"),
    (lambda rp: rp["delta"][1].update(delta=0.1), "at reduced_precision/delta/1 (upstream): delta == value - fp32"),
    (lambda rp: rp["fp32_baseline"].update(speedup=9.0), "speedup == infer_only throughput / fp32 throughput"),
])
def test_reduced_precision_rules(change, message):
    from runner.validate import ResultError, validate_record
    from zoo.stages.record import judged
    rec = judged(reduced(current(), fidelity=0.95))
    assert rec["status"] == "invalid" and rec["error"].startswith("bf16 failed its fp32 baseline (fidelity_to_fp32): "
                                                                  "fidelity_iou 0.9500 < 0.9900")
    validate_record(rec)
    change(rec["reduced_precision"])
    with pytest.raises(ResultError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_record(rec, "x.json")


def test_report_shows_an_invalid_run_as_a_badge_and_never_as_plain_figures(tmp_path):
    results = tmp_path / "results"
    put(results, current(), "a_ok.json")
    bad = current(VERIFY)
    bad["runtime"]["name"] = "openvino"
    put(results, bad, "b_invalid.json")
    old = real()  # a record from before 1.10 that said ok over a failed verify: read as invalid
    old.update(schema_version="1.6", verify=copy.deepcopy(VERIFY), run_id="old")
    old["runtime"]["name"] = "torch"
    put(results, old, "c_old.json")
    proc = py("-m", "runner.report", results, "--out", tmp_path / "rep")
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    runs = [line for line in md.splitlines() if line.startswith("| unetpp |")]
    assert [row.split(" | ")[5] for row in runs] == ["OK", "INVALID", "INVALID"]
    assert f"> **openvino cpu fp32 [INVALID]: run INVALID: {REASON}; its figures are shown marked, not as a sound run's**" in md
    assert "> **torch cpu fp32 [INVALID]: run INVALID: verify failed: onnxruntime 1.31.1 vs torch" in md
    rows = [line for line in md.splitlines() if line.startswith("| openvino cpu fp32 [INVALID] | guide |")]
    assert rows and all("(INVALID)" in r and r.endswith("| INVALID |") for r in rows), rows
    assert "| onnxruntime cpu fp32 | guide | iou | 0.8365 |" in md  # the sound run's figure stays plain
    assert "openvino cpu fp32 [INVALID]" in md.split("Throughput, inference only")[1].splitlines()[2]  # perf column header
    assert '<span class="badge INVALID">INVALID</span>' in (tmp_path / "rep" / "report.html").read_text()


def test_compare_calls_an_invalid_new_run_a_regression(tmp_path):
    put(tmp_path / "base", current(), "r.json")
    bad = current(VERIFY)
    bad["timestamps"]["finished"] = "2026-12-01T00:00:00Z"
    put(tmp_path / "new", bad, "r.json")
    proc = py("-m", "invoke", "compare", tmp_path / "base", tmp_path / "new")
    assert proc.returncode == 1, proc.stderr
    assert re.search(r"^ *record status +- +- +- +failed$", proc.stdout, re.M), proc.stdout
    flat = " ".join(proc.stdout.split())  # the reason line wraps at 100 columns
    assert f"record status: invalid: {REASON}" in flat, proc.stdout


SUMMARISED = """import sys
from pathlib import Path
from invoke import Exit
import tasks
try:
    tasks._summarised(Path({!r}))
except Exit as exc:  # as invoke's program ends a task that raised it
    sys.exit(exc.code)
"""


def test_invoke_runs_ending_prints_invalid_first_and_exits_1(tmp_path):
    """tasks.run's ending after the model process exited 1 with its record written."""
    path = put(tmp_path / "results", current(VERIFY))
    proc = py("-c", SUMMARISED.format(str(path)))
    assert proc.returncode == 1, proc.stderr
    first, second = proc.stdout.splitlines()[:2]
    assert first == f"INVALID: {REASON}" and second.startswith(f"result: {path} (") and "status invalid" in second
    assert "Traceback" not in proc.stderr
    good = put(tmp_path / "ok", current())
    proc = py("-c", SUMMARISED.format(str(good)))
    assert proc.returncode == 0 and proc.stdout.startswith(f"result: {good}"), proc.stderr
