"""Options that must be refused, or must mean what they say (issue 21), through the real CLI
(`python -m zoo ...`, `python3 -m invoke ...` from the repo root): calibration ids that are
evaluation ids, a missing --calib-ids, exclusive flags, negative seeds, calibration options on a
run that does not calibrate (a default value typed explicitly too), bad numbers, `score --data`
on a built-in-data record, `diagnose --out` over an existing file or making results/<model>
elsewhere, and invoke passing on a value equal to the run option's default. Each refusal: exit 2,
one line on stderr naming the option, nothing written or created."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.ids import read_ids

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / "models" / "unetpp"
VAL = MODEL / "val_ids.txt"
BUILTIN_EVAL = ROOT / "zoo" / "samples" / "dsb2018" / "builtin_ids.txt"
BUILTIN_CALIB = ROOT / "zoo" / "samples" / "dsb2018" / "builtin_calib_ids.txt"


def zoo(*args, cwd: Path = ROOT, cache: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if cache is not None:
        env["ZOO_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def refused(proc: subprocess.CompletedProcess, *needles) -> str:
    """Exit 2 and exactly one line on stderr, `error: ...` holding every needle."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "results"  # not created: a refusal must not create it either


# --- calibration on the test set -------------------------------------------------------------

def test_calibration_ids_from_the_guides_val_split_are_refused(out):
    evaluated = read_ids(BUILTIN_EVAL)
    line = refused(zoo("run", "--model", "unetpp", "--precision", "int8", "--calib-ids", VAL, "--out", out),
                   "val_ids.txt", "16 of its 134 calibration ids are evaluation ids", "--calib-from-eval")
    first = [i for i in read_ids(VAL) if i in set(evaluated)][0]
    assert first in line and not out.exists()


def test_calibration_ids_naming_the_builtin_evaluation_ids_are_refused(out):
    refused(zoo("run", "--model", "unetpp", "--precision", "int8", "--calib-ids", BUILTIN_EVAL, "--out", out),
            "builtin_ids.txt", "16 of its 16 calibration ids are evaluation ids")
    assert not out.exists()


def test_a_partial_overlap_is_counted_and_named(out, tmp_path):
    calib, evaluated = read_ids(BUILTIN_CALIB), read_ids(BUILTIN_EVAL)
    ids = tmp_path / "mine.txt"
    ids.write_text("\n".join([calib[0], evaluated[5], calib[1]]) + "\n")
    line = refused(zoo("run", "--model", "unetpp", "--precision", "int8", "--calib-ids", ids, "--out", out),
                   str(ids), "1 of its 3 calibration ids", evaluated[5])
    assert calib[0] not in line and not out.exists()
    # a --limit that leaves the overlapping id out of the evaluation is no overlap: the checks
    # pass, and the run fails later on purpose (a checkpoint that is not one)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    later = zoo("run", "--model", "unetpp", "--precision", "int8", "--calib-ids", ids, "--limit", "5",
                "--weights", bad, "--out", out)
    assert later.returncode == 2 and "bad.pth" in later.stderr and "evaluation ids" not in later.stderr, later.stderr


def test_evaluating_the_calibration_split_is_refused_too(out):
    # --ids-file names the default calibration split's ids: the calibration would be the test set
    refused(zoo("run", "--model", "unetpp", "--precision", "int8", "--ids-file", BUILTIN_CALIB, "--out", out),
            "builtin_calib_ids.txt", "6 of its 6 calibration ids are evaluation ids")
    assert not out.exists()


def test_diagnose_refuses_calibration_on_the_evaluation_ids(tmp_path):
    report = tmp_path / "d.json"
    refused(zoo("diagnose", "--model", "unetpp", "--calib-ids", BUILTIN_EVAL, "--out", report),
            "builtin_ids.txt", "calibration ids are evaluation ids")
    assert not report.exists()


def test_calib_from_eval_is_marked_in_the_record(out, tmp_path):
    proc = zoo("run", "--model", "unetpp", "--precision", "int8", "--calib-from-eval", "--calib-size", "4",
               "--batch-sizes", "1", "--iters", "1", "--warmup", "0", "--time-budget", "1", "--no-peak",
               "--no-fp32-baseline", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    cal = rec["runtime"]["settings"]["quantization"]["calibration"]
    assert cal["from_evaluation_split"] is True and cal["num_samples"] == 4
    assert cal["evaluation_overlap"] == 4 and cal["split"] == "builtin (val)"


# --- options checked before any work ---------------------------------------------------------

@pytest.mark.parametrize("args,needles", [
    (["--precision", "int8", "--calib-ids", "{tmp}/none.txt"], ["--calib-ids", "none.txt", "not found"]),
    (["--precision", "int8", "--calib-from-eval", "--calib-ids", str(MODEL / "calib_ids.txt")],
     ["--calib-from-eval and --calib-ids exclude each other"]),
    (["--precision", "int8", "--calib-seed", "-1"], ["--calib-seed must be >= 0, got -1"]),
    (["--precision", "int8", "--calib-size", "0"], ["--calib-size must be >= 1, got 0"]),
    (["--calib-size", "abc"], ["argument --calib-size", "invalid int value: 'abc'"]),
    (["--time-budget", "abc"], ["argument --time-budget", "invalid float value: 'abc'"]),
    (["--limit", "1.5"], ["argument --limit", "invalid int value: '1.5'"]),
    (["--stable-tolerance", "nan"], ["--stable-tolerance must be >= 0 and < 1"]),
])
def test_bad_option_values_are_one_line(args, needles, out, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    refused(zoo("run", "--model", "unetpp", *args, "--out", out), *needles)
    assert not out.exists()


@pytest.mark.parametrize("typed", [
    ["--calib-size", "32"], ["--calib-method", "minmax"], ["--calib-seed", "0"], ["--calib-from-eval"],
    ["--keep-fp32", "Conv_0"], ["--calib-ids", str(BUILTIN_CALIB)], ["--calib-size", "8"],
])
def test_calibration_options_on_an_fp32_run_are_refused_even_at_their_default(typed, out):
    # the default values (32, minmax, 0) typed explicitly: argparse's defaults must not hide them
    refused(zoo("run", "--model", "unetpp", *typed, "--out", out), f"{typed[0]} has no effect", "fp32")
    assert not out.exists()


def test_calibration_options_on_other_uncalibrated_precisions(out):
    refused(zoo("run", "--model", "unetpp", "--runtime", "torch", "--precision", "bf16", "--calib-method", "entropy",
                "--out", out), "--calib-method has no effect", "bf16")
    assert not out.exists()


def test_bench_refuses_a_calibration_option_none_of_its_runs_reads(out):
    refused(zoo("bench", "--model", "unetpp", "--calib-seed", "0", "--out", out), "--calib-seed has no effect")
    assert not out.exists()


# --- score --data on a built-in-data record ---------------------------------------------------

def test_score_refuses_data_for_a_builtin_record(tmp_path):
    rec = json.loads((ROOT / "tests" / "fixtures" / "result_example.json").read_text())
    builtin = copy.deepcopy(rec)
    builtin["provenance"]["dataset"]["builtin"] = True
    path = tmp_path / "r.json"
    path.write_text(json.dumps(builtin))
    refused(zoo("score", path, "--data", tmp_path), "--data", "built-in data")
    # without --data it is not that refusal (that record kept no predictions), nor with a real --data record
    assert "--data" not in zoo("score", path).stderr
    path.write_text(json.dumps(rec))
    assert "built-in data" not in zoo("score", path, "--data", tmp_path).stderr


# --- diagnose --out ----------------------------------------------------------------------------

def test_diagnose_out_never_replaces_a_file(tmp_path):
    existing = tmp_path / "result.json"
    existing.write_text('{"a result": 1}\n')
    refused(zoo("diagnose", "--model", "unetpp", "--samples", "2", "--out", existing), "--out", "already exists")
    assert existing.read_text() == '{"a result": 1}\n'


def test_diagnose_with_out_elsewhere_makes_no_results_folder(tmp_path):
    # a failure after the checks (an unreadable checkpoint), from a folder with no results/:
    # the checks must not have made results/unetpp there
    cwd, bad = tmp_path / "cwd", tmp_path / "bad.pth"
    cwd.mkdir()
    bad.write_bytes(b"not a checkpoint")
    proc = zoo("diagnose", "--model", "unetpp", "--samples", "2", "--weights", bad, "--out", tmp_path / "r" / "d.json",
               cwd=cwd)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (cwd / "results").exists() and not (tmp_path / "r" / "d.json").exists()


# --- invoke passes on what the user gave ---------------------------------------------------------

def _invoke(*args) -> subprocess.CompletedProcess:
    python3 = shutil.which("python3")
    if python3 is None or subprocess.run([python3, "-c", "import invoke"], capture_output=True).returncode != 0:
        pytest.skip("the host's python3 with invoke is not on PATH")
    return subprocess.run([python3, "-m", "invoke", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_invoke_diagnose_precision_fp32_reaches_diagnose(tmp_path):
    # fp32 is the run option's default but not diagnose's (int8): it used to be dropped, and the
    # int8 diagnosis ran; now diagnose gets it and refuses it (fp32 is not a calibrated precision)
    report = tmp_path / "d.json"
    proc = _invoke("diagnose", "--model", "unetpp", "--precision", "fp32", "--out", report)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "--precision must be a calibrated precision" in errors[0] and "'fp32'" in errors[0]
    assert not report.exists()


def test_invoke_run_passes_a_default_value_typed(out):
    proc = _invoke("run", "--model", "unetpp", "--calib-size", "32", "--out", out)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "--calib-size has no effect" in errors[0] and "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("args,needle", [(["--limit", "0"], "--limit must be >= 1, got 0"),
                                         (["--limit", "x"], "argument --limit")])
def test_prep_checks_its_options_before_writing(args, needle, tmp_path):
    # --limit 0 wrote an empty .bin folder (and prepared 0 samples)
    refused(zoo("prep", "--model", "unetpp", "--bin-dir", tmp_path / "bins", *args), needle)
    assert not (tmp_path / "bins").exists()


# --- the export's opset ------------------------------------------------------------------------

@pytest.mark.parametrize("opset", ["-1", "99"])
def test_an_opset_the_exporter_cannot_export_is_refused_before_any_work(out, tmp_path, opset):
    """Refused by check_config (it used to fail at the export stage, after the weights and the data
    were loaded); the cache stays untouched too."""
    cache = tmp_path / "cache"
    refused(zoo("run", "--model", "unetpp", "--opset", opset, "--out", out, cache=cache),
            f"--opset {opset}", "exports opsets 7 to")
    assert not out.exists() and not cache.exists()


def test_opset_with_a_given_onnx_file_is_refused_as_without_effect(out, tmp_path):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"not read: the option check comes first")
    refused(zoo("run", "--model", "unetpp", "--onnx", onnx_file, "--opset", "11", "--out", out),
            "--opset has no effect with --onnx")
    assert not out.exists()


@pytest.mark.parametrize("args,needle", [
    (("run", "--model", "unetpp", "--time-budget", "inf"), "--time-budget must be a finite number of seconds, got inf"),
    (("run", "--model", "unetpp", "--isolate", "--memory-limit", "inf"), "--memory-limit must be a finite number of MB"),
    (("diagnose", "--model", "unetpp", "--top", "0"), "--top must be >= 1"),
])
def test_numbers_that_pass_their_bounds_but_mean_nothing_are_refused(out, args, needle):
    """inf passes '> 0' (a time budget never spent, a memory limit never reached); --top 0 prints
    no unit: each is refused before any work."""
    refused(zoo(*args, "--out", out / "x.json" if args[0] == "diagnose" else out), needle)
    assert not out.exists()
