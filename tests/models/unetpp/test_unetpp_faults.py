"""Issue 11, through the real CLI: run options and output paths checked before any work, NaN
weights, a full disk, SIGTERM, and the death of the process that started the run. Each case: one
line `error: ...`, the exit code, and no (partial) result."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.zootest import assert_clean_failure, result_files

from .conftest import MODEL_DIR, ROOT

WEIGHTS = MODEL_DIR / "weights" / "unetpp_dsb2018.pth"
FAST = ("--batch-sizes", "1", "--iters", "1", "--warmup", "0", "--no-peak", "--limit", "2")


def _env(cache: Path, **extra) -> dict:
    return {**os.environ, "ZOO_CACHE": str(cache), "PYTHONPATH": str(ROOT), **extra}


@pytest.mark.parametrize("args,needle", [
    (("--threads", "-3"), "--threads must be >= 1, got -3"),
    (("--workers", "0"), "--workers must be >= 1"),
    (("--time-budget", "0"), "--time-budget must be > 0"),
    (("--option", "upsample=bogus"), "option upsample must be one of bilinear, nearest, got 'bogus'"),
    (("--option", "upsample=!!python/object/apply:os.system ['touch /tmp/zoo-pwned']"), "must be one of bilinear"),
    (("--option", "deep_supervision=maybe"), "option deep_supervision must be true or false, got 'maybe'"),
    (("--option", "num_classes=2"), "option num_classes must be in [1, 1], got 2"),
    (("--option", "colour=red"), "unknown model option(s) colour"),
    (("--memory-limit", "100"), "--memory-limit needs --isolate"),
])
def test_bad_run_options_fail_before_any_work(run_zoo, out, tmp_path, args, needle):
    """The cache stays untouched: no weights hashed into it, no export, no preparation."""
    cache = tmp_path / "fresh-cache"
    proc = run_zoo("run", "--model", "unetpp", "--out", out, *args, cache=cache)
    assert_clean_failure(proc, out, needle)
    assert not cache.exists(), "work started before the options were checked"


@pytest.mark.parametrize("where", ["under-a-file", "in-proc"])
def test_unwritable_out_fails_before_any_work(run_zoo, tmp_path, where):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "results" if where == "under-a-file" else Path("/proc/zoo-results")
    cache = tmp_path / "fresh-cache"
    proc = run_zoo("run", "--model", "unetpp", "--out", out, *FAST, cache=cache)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {out}/unetpp: cannot create the results folder"), last
    assert not cache.exists()


def test_nan_weights_fail_naming_the_sample(run_zoo, out, tmp_path):
    """NaN weights used to give status ok and bare NaN in the result JSON."""
    sd = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    name = next(k for k in sd if k.endswith("final.weight"))
    sd[name] = torch.full_like(sd[name], float("nan"))
    bad = tmp_path / "nan.pth"
    torch.save(sd, bad)
    proc = run_zoo("run", "--model", "unetpp", "--weights", bad, "--out", out, *FAST)
    last = assert_clean_failure(proc, out, "non-finite values (NaN or infinity) in sample 0", str(bad))
    assert "no result written" in last


def test_strict_json_refuses_non_finite_numbers(tmp_path):
    from zoo.fileutil import create_unique_json
    from zoo.schema import SchemaError, first_nonfinite, validate
    rec = {"a": [1.0, {"b": float("inf")}], "c": 2}
    assert first_nonfinite(rec) == "a/1/b" and first_nonfinite({"x": [1, 2.5]}) is None
    with pytest.raises(SchemaError, match=r"non-finite number \(NaN/Infinity\) at a/1/b"):
        validate(rec, "r.json")
    with pytest.raises(ValueError):  # the result writer itself refuses NaN, even unvalidated
        create_unique_json(tmp_path, {"run_id": "r", "x": float("nan")})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs (a full disk) needs root")
def test_full_disk_at_the_end_is_one_line_and_leaves_nothing(run_zoo, tmp_path):
    """The results folder is writable (the check at the start passes) but has no room for the
    record: ENOSPC when the result is written."""
    out = tmp_path / "full"
    out.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k,nr_inodes=64", "tmpfs", str(out)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (out / "unetpp").mkdir()
        proc = run_zoo("run", "--model", "unetpp", "--out", out, *FAST)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "No space left on device" in last, last
        assert result_files(out) == []
    finally:
        subprocess.run(["umount", str(out)], check=False)


def _start(cmd: list[str], env: dict, **kw) -> subprocess.Popen:
    # a CI job started in the background inherits SIGINT ignored; these tests are about signals
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


LONG = ["-m", "zoo", "run", "--model", "unetpp", "--batch-sizes", "1", "--iters", "100000", "--time-budget", "600",
        "--stable-tolerance", "0", "--no-peak"]


def _wait_for_inference(proc, deadline_s: float = 300) -> None:
    deadline = time.time() + deadline_s
    for line in proc.stderr:
        if line.startswith("[6/7]") or time.time() > deadline:
            break
    time.sleep(1.0)


def test_sigterm_is_handled_like_ctrl_c_with_143(out, zoo_cache):
    proc = _start([sys.executable, *LONG, "--out", str(out)], _env(zoo_cache))
    try:
        _wait_for_inference(proc)
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert time.time() - t0 < 30, "SIGTERM must stop the run promptly"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1] == "error: terminated (SIGTERM); no result written"
    assert "Traceback" not in err
    assert result_files(out) == []


def test_the_run_stops_when_its_parent_dies(out, zoo_cache, tmp_path):
    """A parent (standing in for invoke) starts the run with ZOO_PARENT_PID and is SIGKILLed: the
    run gets the kernel's parent-death signal and stops without a result."""
    pidfile = tmp_path / "child.pid"
    parent_code = (
        "import os, subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, *{LONG!r}, '--out', {str(out)!r}],"
        " env={**os.environ, 'ZOO_PARENT_PID': str(os.getpid())}, stdout=subprocess.DEVNULL,"
        f" stderr=open({str(tmp_path / 'child.err')!r}, 'w'))\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(3600)\n")
    parent = _start([sys.executable, "-c", parent_code], _env(zoo_cache))
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (pidfile.exists() and pidfile.read_text()):
            time.sleep(0.2)
        child = int(pidfile.read_text())
        err = tmp_path / "child.err"
        while time.time() < deadline and "[6/7]" not in err.read_text():
            time.sleep(0.5)
        parent.kill()
        parent.wait(timeout=30)
        deadline = time.time() + 60
        while time.time() < deadline and _alive(child):
            time.sleep(0.2)
        assert not _alive(child), "the run went on after its parent died"
        assert err.read_text().strip().splitlines()[-1] == "error: terminated (SIGTERM); no result written"
        assert result_files(out) == []
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
