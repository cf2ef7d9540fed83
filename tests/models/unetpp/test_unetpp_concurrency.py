"""Issue 11 (caches and concurrent runs), through the real CLI in real processes: runs started
together on a cold cache build every cache entry once and all succeed with their own result file;
damaged cache entries are rebuilt with a warning; an interrupted preparation leaves no temporary
folder; `prep` never touches another folder's temporary name."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo import schema

from tests.zootest import last_json, result_files

from .conftest import BUILTIN, ROOT, builtin_ids

QUICK = ["--batch-sizes", "1", "--limit", "3", "--no-peak", "--iters", "2", "--warmup", "0", "--time-budget", "1",
         "--stable-tolerance", "0"]


def _start(cache: Path, *args) -> subprocess.Popen:
    env = {**os.environ, "ZOO_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    # started with SIGINT ignored, as a background job of a non-interactive shell is (one test here
    # is about Ctrl-C): the zoo sets its own handler, whatever the caller's disposition
    return subprocess.Popen([sys.executable, "-m", "zoo", *map(str, args)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))


def _finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _litter(cache: Path) -> list[Path]:
    """Temporary folders/files and lock files anywhere in the cache."""
    return [p for p in cache.rglob("*") if p.name.endswith((".tmp", ".lock"))]


@pytest.fixture(scope="module")
def trio(tmp_path_factory) -> dict:
    """Three runs of one model started together on a cold cache, one --out."""
    base = tmp_path_factory.mktemp("trio")
    cache, out = base / "cache", base / "results"
    procs = [_start(cache, "run", "--model", "unetpp", *QUICK, "--out", out) for _ in range(3)]
    return {"cache": cache, "out": out, "done": [(p, *_finish(p)) for p in procs]}


def test_three_cold_runs_at_once_build_each_entry_once_and_keep_three_results(trio):
    cache, out, done = trio["cache"], trio["out"], trio["done"]
    for p, _, err in done:
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    # one export, one compiled model, one prepared dataset, nothing else left in the cache
    assert len(_entries(cache / "export")) == 1
    assert len(_entries(cache / "compiled" / "onnxruntime")) == 1
    assert len(_entries(cache / "datasets" / "dsb2018_96")) == 1
    assert _litter(cache) == []
    # three distinct valid records, each at the path its run printed, named by its run_id
    printed = [Path(o.strip().splitlines()[-1]) for _, o, _ in done]
    assert sorted(printed) == sorted(result_files(out)) and len(set(printed)) == 3
    records = [json.loads(p.read_text()) for p in printed]
    for path, rec in zip(printed, records):
        schema.validate(rec, str(path))
        assert rec["run_id"] == path.stem and rec["run_id"].startswith("unetpp-onnxruntime-")
    # each entry was built by exactly one run; the others waited for it or found it done
    assert sorted(r["export"]["cached"] for r in records) == [False, True, True]
    assert sorted(r["runtime"]["settings"]["compile_cached"] for r in records) == [False, True, True]
    assert sorted(r["provenance"]["dataset"]["preparation"]["cached"] for r in records) == [False, True, True]
    assert len({r["export"]["onnx_sha256"] for r in records}) == 1
    waits = sum(err.count("(being built by another run)") for _, _, err in done)
    assert sum(err.count("preparing 3 DSB2018 samples") for _, _, err in done) == 1
    assert waits <= 6  # at most once per entry per waiting run


def test_damaged_compiled_model_and_export_are_rebuilt_with_a_warning(trio, run_zoo, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "results"
    shutil.copytree(trio["cache"], cache)                    # the trio's entries, to damage
    rec = json.loads(result_files(trio["out"])[0].read_text())
    (ort_model,) = (cache / "compiled" / "onnxruntime").glob("*/model.ort.onnx")
    onnx_model = cache / Path(rec["export"]["path"]).relative_to(trio["cache"])

    # 1) a truncated compiled model: used to be trusted forever (a traceback on every later run)
    ort_model.write_bytes(ort_model.read_bytes()[:4096])
    second = run_zoo("run", "--model", "unetpp", *QUICK, "--out", out, cache=cache)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"warning: cache entry {ort_model.parent} is damaged (model.ort.onnx is 4096 bytes" in second.stderr
    rec2 = last_json(second)
    assert rec2["runtime"]["settings"]["compile_cached"] is False and rec2["export"]["cached"] is True

    # 2) a truncated export (the 281-byte model.onnx the colliding temp names used to leave)
    onnx_model.write_bytes(onnx_model.read_bytes()[:281])
    third = run_zoo("run", "--model", "unetpp", *QUICK, "--out", out, cache=cache)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"warning: cache entry {onnx_model.parent} is damaged (model.onnx is 281 bytes" in third.stderr
    rec3 = last_json(third)
    assert rec3["export"]["cached"] is False and rec3["export"]["parity"]["passed"]
    assert onnx_model.stat().st_size > 1_000_000
    assert "Traceback" not in second.stderr + third.stderr and _litter(cache) == []
    assert [a["value"] for a in rec3["accuracy"]] == [a["value"] for a in rec["accuracy"]]
    assert len(result_files(out)) == 2


def _bigger_dataset(dest: Path, copies: int) -> Path:
    """The built-in samples under `copies` times as many ids (so preparing them takes a while)."""
    ids = []
    for sid in builtin_ids():
        src = BUILTIN / "stage1_train" / sid
        for k in range(copies):
            new = f"{sid[:40]}{k:04d}"
            d = dest / "stage1_train" / new
            (d / "images").mkdir(parents=True)
            shutil.copyfile(src / "images" / f"{sid}.png", d / "images" / f"{new}.png")
            shutil.copytree(src / "masks", d / "masks")
            ids.append(new)
    (dest / "ids.txt").write_text("\n".join(ids) + "\n")
    return dest


def test_ctrl_c_during_preparation_leaves_no_temporary_folder(tmp_path):
    """(A second Ctrl-C during the clean-up: tests/core/test_core_cache.py.)"""
    data = _bigger_dataset(tmp_path / "dsb", copies=40)
    cache, out = tmp_path / "cache", tmp_path / "results"
    out.mkdir()
    proc = _start(cache, "run", "--model", "unetpp", "--data", data, "--ids-file", data / "ids.txt", *QUICK[:2],
                  "--no-peak", "--out", out)
    prepared = cache / "datasets" / "dsb2018_96"
    try:
        deadline, started = time.time() + 300, None
        while started is None and time.time() < deadline and proc.poll() is None:
            temps = [p for p in prepared.iterdir() if p.name.endswith(".tmp")] if prepared.is_dir() else []
            if temps and any((temps[0] / "images").glob("*.png")):
                started = temps[0]
            time.sleep(0.01)
        assert started is not None, "the preparation was not caught in progress"
        proc.send_signal(signal.SIGINT)
        _, err = _finish(proc, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "error: interrupted; no result written"
    assert not started.exists()
    assert _entries(prepared) == [] and _litter(cache) == []
    assert result_files(out) == []


def test_prep_never_touches_a_folder_named_like_its_old_temp_and_leaves_none(run_zoo, tmp_path):
    bins = tmp_path / "bins"
    other = tmp_path / "bins.tmp"             # someone's folder with the name prep used to rmtree
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    proc = run_zoo("prep", "--model", "unetpp", "--limit", "2", "--bin-dir", bins)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (other / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bins", "bins.tmp"]
    assert len(list(bins.glob("*.bin"))) == 2


def test_two_preps_into_one_folder_at_once_one_wins_one_fails_cleanly(tmp_path, zoo_cache):
    bins = tmp_path / "bins"
    procs = [_start(zoo_cache, "prep", "--model", "unetpp", "--bin-dir", bins) for _ in range(2)]
    done = [(p.returncode, o, e) for p in procs for o, e in [_finish(p)]]
    codes = sorted(c for c, _, _ in done)
    assert codes == [0, 2], done
    loser = next(e for c, _, e in done if c == 2)
    assert loser.strip().splitlines()[-1] == f"error: {bins}: already exists (refusing to mix with other files)"
    assert "Traceback" not in loser
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bins"]  # no temporary folder left
    info = json.loads((bins / "inputs.json").read_text())
    assert sorted(p.stem for p in bins.glob("*.bin")) == sorted(info["ids"]) and len(info["ids"]) == 16
