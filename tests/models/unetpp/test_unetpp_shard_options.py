"""Issue 21 on the sharding surface and the zoo's own signal handling, through the real CLI: the
--shards options refused before any work (one line, exit 2, nothing on stdout, no result), a
cluster address that does not answer (bounded: ZOO_CLUSTER_TIMEOUT), SIGTERM to a sharded run
(the zoo's line and 143, not Ray's crash dump), Ctrl-C reaching a run started with SIGINT ignored
(a background job of a non-interactive shell), and `score` of an edited predictions index.
Two real sharded start-ups at most (a Ray start costs about 20 s)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.zootest import assert_clean_failure, read_until, result_files

from .conftest import ROOT

FAST = ("--model", "unetpp", "--iters", "2", "--warmup", "1", "--no-peak", "--time-budget", "2")


def _env(cache: Path, **extra) -> dict:
    return {**os.environ, "ZOO_CACHE": str(cache), "PYTHONPATH": str(ROOT), **extra}


def _zoo(out: Path, cache: Path, *args, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo", "run", *FAST, "--out", str(out), *map(str, args)], cwd=ROOT,
                          env=_env(cache, **(env or {})), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("args,needle", [
    (("--cluster", "this://x"), "--cluster must be local, auto, ray://HOST:PORT or HOST:PORT"),
    (("--cluster", "head:0"), "(a port 1-65535), got 'head:0'"),
    (("--cluster", "ray://head"), "--cluster must be local, auto"),
    (("--devices", "\u0663"), "--devices must be device numbers in ASCII digits (0-9)"),  # Arabic-Indic 3
    (("--devices", "0,\u00b2"), "--devices must be device numbers in ASCII digits"),      # superscript 2
    (("--devices", "0,1"), "--devices 0,1: onnxruntime shards run on CPU slots and open no device"),
    (("--limit", "2", "--shards", "3"), "--shards 3: more shards than the 2 sample(s) of --limit 2"),
])
def test_shard_options_are_refused_before_any_work(tmp_path, cache, args, needle):
    """Checked with the other options (check_config): no weights loaded, no Ray imported (`this://x`
    made Ray import the module `this`, whose text went to stdout where invoke reads the result)."""
    out = tmp_path / "results"
    out.mkdir()
    shards = () if "--shards" in args else ("--shards", "2")
    proc = _zoo(out, cache, "--batch-sizes", "1", *shards, *args)
    assert_clean_failure(proc, out, needle)
    assert proc.stdout == "" and "[1/7]" not in proc.stderr


def test_more_shards_than_samples_is_refused_before_the_export(tmp_path, cache):
    """The built-in data has 16 samples: known when the dataset opens, before export and Ray."""
    out = tmp_path / "results"
    out.mkdir()
    proc = _zoo(out, cache, "--batch-sizes", "1", "--shards", "17")
    assert_clean_failure(proc, out, "--shards 17: only 16 sample(s) to split")
    assert "[3/7]" not in proc.stderr and proc.stdout == ""


def test_nothing_listening_at_the_address_fails_at_once(tmp_path, cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "results"
    out.mkdir()
    proc = _zoo(out, cache, "--batch-sizes", "1", "--limit", "2", "--shards", "2", "--cluster", f"127.0.0.1:{port}",
                env={"ZOO_CLUSTER_TIMEOUT": "5"}, timeout=300)
    assert_clean_failure(proc, out, f"--cluster 127.0.0.1:{port}: cannot start or join the Ray cluster: nothing answers "
                                    f"at 127.0.0.1:{port}", "ZOO_CLUSTER_TIMEOUT=5 s")
    assert "rpc_client" not in proc.stderr  # Ray's C++ retries never started


def test_a_bad_cluster_timeout_is_one_line(tmp_path, cache):
    out = tmp_path / "results"
    out.mkdir()
    proc = _zoo(out, cache, "--batch-sizes", "1", "--limit", "2", "--shards", "2", "--cluster", "127.0.0.1:6379",
                env={"ZOO_CLUSTER_TIMEOUT": "soon"})
    assert_clean_failure(proc, out, "ZOO_CLUSTER_TIMEOUT must be a positive number of seconds, got 'soon'")


def test_an_address_that_answers_but_is_not_ray_is_bounded(tmp_path, cache):
    """A TCP server that accepts and says nothing (not a Ray head): Ray's join is given one
    attempt of ZOO_CLUSTER_TIMEOUT seconds instead of its ~14 minutes of retries (Ray's own
    connection steps add about 11 s)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    out = tmp_path / "results"
    out.mkdir()
    try:
        started = time.monotonic()
        proc = _zoo(out, cache, "--batch-sizes", "1", "--limit", "2", "--shards", "2", "--cluster", f"127.0.0.1:{port}",
                    env={"ZOO_CLUSTER_TIMEOUT": "3"}, timeout=300)
        took = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
        for c in held:
            c.close()
        server.close()
    assert_clean_failure(proc, out, f"--cluster 127.0.0.1:{port}: cannot start or join the Ray cluster")
    assert took < 90, f"the join took {took:.0f} s"


def _start_and_wait(out: Path, cache: Path, marker: str, *args, preexec=None) -> tuple[subprocess.Popen, list[str]]:
    """A run in the background, read until a stderr line starting with `marker`."""
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "run", *FAST, "--out", str(out), *args], cwd=ROOT,
                            env=_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=preexec)
    return proc, read_until(proc, marker)


def test_sigterm_to_a_sharded_run_is_the_zoos_line_and_143(tmp_path, cache):
    """ray.init installs its own SIGTERM handler (sys.exit: exit 1 and a crash dump); the zoo's is
    put back, so a sharded run stops like a single-process one, its local cluster with it."""
    out = tmp_path / "results"
    out.mkdir()
    proc, lines = _start_and_wait(out, cache, "shard 1:", "--batch-sizes", "1", "--shards", "2", "--iters", "100000",
                                  "--time-budget", "600", "--stable-tolerance", "0", "--no-scaling-reference")
    try:
        assert proc.poll() is None, "".join(lines)[-2000:]
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(lines) + err
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "error: terminated (SIGTERM); no result written"
    assert "Traceback" not in err and "SystemExit" not in err
    assert result_files(out) == []
    time.sleep(2)
    from tests.raynodes import shard_workers
    assert shard_workers(cache) == []  # this run's workers (another session's Ray on the machine is not ours)


def test_ctrl_c_reaches_a_run_started_with_sigint_ignored(tmp_path, cache):
    """A background job of a non-interactive shell starts its commands with SIGINT ignored; the
    zoo sets its own SIGINT handler, so a forwarded Ctrl-C (invoke) or `kill -INT` still stops it
    with one line and 130 (before, the run went on to write its result)."""
    out = tmp_path / "results"
    out.mkdir()
    proc, lines = _start_and_wait(out, cache, "[6/7]", "--batch-sizes", "1", "--iters", "100000", "--time-budget",
                                  "600", "--stable-tolerance", "0",
                                  preexec=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert proc.poll() is None, "".join(lines)[-2000:]
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "error: interrupted; no result written"
    assert result_files(out) == []


# ---------------------------------------------------------------- score of an edited predictions index

@pytest.fixture(scope="module")
def saved(tmp_path_factory, cache) -> tuple[Path, Path]:
    """A real run with --save-predictions: (its record, its predictions index)."""
    out = tmp_path_factory.mktemp("saved")
    proc = _zoo(out, cache, "--batch-sizes", "1", "--limit", "3", "--save-predictions")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = Path(proc.stdout.strip().splitlines()[-1])
    index = record.parent / json.loads(record.read_text())["predictions"]["path"] / "index.json"  # beside the record
    assert index.is_file()
    return record, index


@pytest.mark.parametrize("edit,needle", [
    (lambda ix: ix.pop("ids"), "not a predictions index: no 'ids' list of sample ids"),
    (lambda ix: ix.update(ids="abc"), "'ids' must be a list of sample id strings"),
    (lambda ix: ix.update(ids=[1, 2]), "'ids' must be a list of sample id strings"),
    (lambda ix: ix["ids"].append(ix["ids"][0]), "'ids' lists a sample twice"),
    (lambda ix: ix.update(maps={"../x": "bool"}), "'maps' must map prediction names to 'bool' or 'int'"),
    (lambda ix: ix.update(detections="../../record.json"), "'detections' must be a file name"),
])
def test_score_of_an_edited_index_is_one_line(tmp_path, cache, saved, edit, needle):
    record, index = saved
    original = index.read_text()
    value = json.loads(original)
    edit(value)
    index.write_text(json.dumps(value))
    try:
        proc = subprocess.run([sys.executable, "-m", "zoo", "score", str(record)], cwd=ROOT, env=_env(cache),
                              capture_output=True, text=True, timeout=300)
    finally:
        index.write_text(original)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {index}: ") and needle in last, last
    assert "Traceback" not in proc.stderr


def test_score_of_an_index_that_is_not_an_object_or_too_deep(tmp_path, cache, saved):
    record, index = saved
    original = index.read_text()
    try:
        for text, needle in (("[]", "expected an object, got list"),
                             ("[" * 100_000 + "]" * 100_000, "unreadable predictions index (JSON nested too deeply)")):
            index.write_text(text)
            proc = subprocess.run([sys.executable, "-m", "zoo", "score", str(record)], cwd=ROOT, env=_env(cache),
                                  capture_output=True, text=True, timeout=300)
            last = proc.stderr.strip().splitlines()[-1]
            assert proc.returncode == 2 and needle in last and str(index) in last, proc.stderr[-2000:]
            assert "Traceback" not in proc.stderr
    finally:
        index.write_text(original)
