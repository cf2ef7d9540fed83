"""Issue 21, no wrong number with status ok: real runs, real records, edited.

- A run whose verify fails (the test model tinyseg with a zero verify tolerance: ONNX Runtime is
  never bit-equal to PyTorch) or whose reduced precision fails its fp32 baseline (a zero fidelity
  tolerance) writes its record with status "invalid" and the reason in `error`, prints
  `INVALID: <reason>` on stderr and exits 1; the same record saying ok is refused by the schema.
- `python -m zoo score` recomputes every figure an accuracy block states (value, metric,
  metrics, per_class, num_samples, reference, passed, the protocol set both ways): one edit, one
  DIFFERS line naming the field, exit 1; the figures it cannot recompute (the spread across batch
  sizes) are held to the record checker's rules instead (a BREAKS line).
- A real record with a figure that contradicts the others is refused by zoo.schema.validate with
  one line naming the file and the rule."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.schema import SchemaError, validate

ROOT = Path(__file__).resolve().parents[3]
TINYSEG = ROOT / "tests" / "fixtures" / "models" / "tinyseg"
FAST = ["--no-peak", "--iters", "2", "--warmup", "1", "--time-budget", "1"]


def zoo(tmp: Path, *args, models: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZOO_CACHE": str(tmp / "cache")}
    if models is not None:
        env["ZOO_MODEL_DIRS"] = str(models)
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


def strict_tinyseg(tmp: Path) -> Path:
    """A copy of the test model whose fp32 verify tolerates no difference at all, and whose
    reference tolerance (a fidelity's: >= 1 - tolerance) is 0; bf16's verify tolerates anything.
    Its built-in data is the DSB2018 family's shared sample (zoo/samples/dsb2018), found from the
    copy's folder as from the original's."""
    models = tmp / "models"
    shutil.copytree(TINYSEG, models / "tinyseg")
    yaml = models / "tinyseg" / "model.yaml"
    text = yaml.read_text()
    for old, new in (("fp32: {rtol: 1.0e-4, atol: 1.0e-5, max_flip_fraction: 0.001}",
                      "fp32: {rtol: 1.0e-12, atol: 0.0, max_flip_fraction: 0.0}\n"
                      "    bf16: {rtol: 1.0, atol: 1.0, max_flip_fraction: 1.0}"),
                     ("  tolerance: 0.01\n", "  tolerance: 0.0\n")):
        assert old in text, old
        text = text.replace(old, new)
    yaml.write_text(text)
    return models


def invalid_run(proc, out: Path, reason: str) -> dict:
    """exit 1, the record written (validated) with status invalid, its reason loud on stderr."""
    assert proc.returncode == 1, proc.stderr[-2000:]
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.parent.parent == out and path.is_file()
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"INVALID: {reason}") and str(path) in last, last
    rec = json.loads(path.read_text())
    assert rec["status"] == "invalid" and rec["error"].startswith(reason)
    validate(rec, str(path))
    return rec


def test_a_failed_verify_writes_an_invalid_record_and_exits_1(tmp_path):
    models = strict_tinyseg(tmp_path)
    out = tmp_path / "out"
    proc = zoo(tmp_path, "run", "--model", "tinyseg", "--batch-sizes", "2", *FAST, "--out", out, models=models)
    rec = invalid_run(proc, out, "verify failed: onnxruntime")
    assert rec["verify"]["passed"] is False and "max_rel_diff" in rec["error"] and "> rtol 1e-12" in rec["error"]
    assert rec["perf"] and all(p["status"] == "ok" for p in rec["perf"])  # the speed is real: measured and kept
    assert "the record will say status invalid" in proc.stderr
    # the same record saying ok is refused by the schema itself (1.10), and so is invalid without a reason
    ok = {**copy.deepcopy(rec), "status": "ok", "error": None}
    with pytest.raises(SchemaError, match=r"^r\.json: does not match result\.schema\.json at verify/passed"):
        validate(ok, "r.json")
    with pytest.raises(SchemaError, match="at error"):
        validate({**copy.deepcopy(rec), "error": ""}, "r.json")
    # a record from before 1.10 may say ok over it: readable, and read as invalid
    from zoo.checks import status_of
    older = {**ok, "schema_version": "1.9"}
    assert validate(older, "old.json") and status_of(older) == "invalid"


def test_a_failed_reduced_precision_writes_an_invalid_record_and_exits_1(tmp_path):
    """bf16 with a weights file that is no manifest checkpoint: judged by its fidelity to fp32,
    here against a tolerance of 0 (fidelity must be 1): fails, while its verify passed."""
    models = strict_tinyseg(tmp_path)
    weights = tmp_path / "other.pth"
    shutil.copy(TINYSEG / "tinyseg.pth", weights)
    out = tmp_path / "out"
    proc = zoo(tmp_path, "run", "--model", "tinyseg", "--runtime", "torch", "--precision", "bf16", "--weights", weights,
               "--batch-sizes", "2", *FAST, "--out", out, models=models)
    rec = invalid_run(proc, out, "bf16 failed its fp32 baseline (fidelity_to_fp32): fidelity_iou")
    assert rec["verify"]["passed"] is True and rec["reduced_precision"]["passed"] is False
    with pytest.raises(SchemaError, match="at reduced_precision/passed"):
        validate({**rec, "status": "ok", "error": None}, "r.json")


# ---------------------------------------------------------------- zoo score on a real record


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Path:
    """A real UNet++ run that kept its predictions (4 samples, two batch sizes)."""
    tmp = tmp_path_factory.mktemp("scored")
    proc = zoo(tmp, "run", "--model", "unetpp", "--batch-sizes", "2,4", "--limit", "4", "--save-predictions", *FAST,
               "--out", tmp / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return Path(proc.stdout.strip().splitlines()[-1])


def _edit(path: Path, change) -> Path:
    """A copy of the record beside it (its predictions folder is found relative to it), edited."""
    rec = json.loads(path.read_text())
    change(rec)
    edited = path.with_name("edited-" + path.name)
    edited.write_text(json.dumps(rec))
    return edited


def _set(*keys, value):
    def change(rec):
        node = rec["accuracy"][0]
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return change


def _drop_upstream(rec):
    rec["accuracy"].pop(1)


def _add_protocol(rec):
    rec["accuracy"].append({**copy.deepcopy(rec["accuracy"][0]), "name": "extra"})


EDITS = {  # field named in the DIFFERS line: the edit
    "guide.value": _set("value", value=0.99),
    "guide.metric": _set("metric", value="dice"),
    "guide.metrics.iou": _set("metrics", "iou", value=0.99),
    "guide.metrics.extra": _set("metrics", "extra", value=1.0),
    "guide.per_class": _set("per_class", value=[{"class": "nucleus", "iou": 0.9}]),
    "guide.num_samples": _set("num_samples", value=3),
    "guide.reference.value": _set("reference", "value", value=0.5),
    "guide.reference.delta": _set("reference", "delta", value=0.0),
    "guide.reference.relative_drop": _set("reference", "relative_drop", value=0.0),
    "guide.reference.tolerance": _set("reference", "tolerance", value=0.5),
    "guide.passed": _set("passed", value=True),
    "upstream.(protocol)": _drop_upstream,
    "extra.(protocol)": _add_protocol,
}


def score(tmp: Path, path: Path) -> subprocess.CompletedProcess:
    return zoo(tmp, "score", path)


def test_score_of_the_unedited_record_passes(scored, tmp_path):
    proc = score(tmp_path, scored)
    assert proc.returncode == 0, proc.stderr
    assert "every figure equals the record's" in proc.stdout and "not re-scored: consistent_across_batch_sizes" in proc.stderr


@pytest.mark.parametrize("field", list(EDITS))
def test_score_names_each_edited_figure(scored, tmp_path, field):
    proc = score(tmp_path, _edit(scored, EDITS[field]))
    assert proc.returncode == 1, proc.stderr
    differs = [line for line in proc.stderr.splitlines() if line.startswith("DIFFERS ")]
    assert len(differs) == 1 and differs[0].startswith(f"DIFFERS {field}: recorded "), proc.stderr
    assert "every figure equals" not in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.parametrize("key, value, rule", [
    ("consistent_across_batch_sizes", False, "consistent_across_batch_sizes == (max_spread_across_batch_sizes <= 0.0001)"),
    ("max_spread_across_batch_sizes", 0.5, "consistent_across_batch_sizes == (max_spread_across_batch_sizes <= 0.0001)"),
    ("batch_size", 8, "batch_size is one whose pipeline ran")])
def test_score_holds_what_it_cannot_recompute_to_the_rules(scored, tmp_path, key, value, rule):
    proc = score(tmp_path, _edit(scored, _set(key, value=value)))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("DIFFERS")] == []
    (broken,) = [line for line in lines if line.startswith("BREAKS ")]
    assert "edited-" in broken and "at accuracy/0 (guide): " + rule in broken


# ---------------------------------------------------------------- the record checker on a real record


@pytest.mark.parametrize("where, change, rule", [
    ("accuracy/0 (guide)", _set("value", value=0.99), "value == metrics[metric]"),
    ("accuracy/0 (guide)", _set("reference", "delta", value=0.0), "reference.delta == value - reference.value"),
    ("accuracy/0 (guide)", _set("passed", value=True), "passed == (reference.relative_drop <= reference.tolerance)"),
    ("accuracy/0 (guide)", _set("passed", value=False), "no pass/fail verdict on a subset"),
    ("perf/0 (bs2 infer_only)", lambda r: r["perf"][0].update(throughput=r["perf"][0]["throughput"] * 2),
     "throughput == 1000 * batch_size / latency_ms.mean"),
    ("perf/1 (bs2 pipeline)", lambda r: r["perf"][1].update(num_samples=134), "throughput == num_samples / wall_s"),
    ("verify", lambda r: r["verify"].update(decision_flips=5), "decision_flips == the decisions' flips added"),
])
def test_a_real_record_that_contradicts_itself_is_refused(scored, where, change, rule):
    rec = json.loads(scored.read_text())
    validate(rec, "real.json")
    change(rec)
    with pytest.raises(SchemaError) as info:
        validate(rec, "real.json")
    msg = str(info.value)
    assert msg.startswith(f"real.json: breaks a record rule at {where}: {rule}") and "\n" not in msg, msg
