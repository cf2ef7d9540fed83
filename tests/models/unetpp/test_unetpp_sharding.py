"""Issue 15, item 1-2 and 5, through the real CLI on a real local Ray cluster: a sharded run's
accuracy equals the single-process run's to the last digit; a worker killed mid-shard is run again
and nothing is counted twice; a shard that keeps dying fails the run with one line and no result;
fake NPUs are placed by Ray and made visible per actor; Ctrl-C stops the cluster work; the
single-process path never imports Ray."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.zootest import assert_clean_failure, read_until, result_files

from .conftest import ROOT

ray = pytest.importorskip("ray", reason="Ray is not installed in this environment (invoke setup pins it)")

FAST = ("--model", "unetpp", "--iters", "2", "--warmup", "1", "--no-peak", "--time-budget", "2")
UNEVEN = ("--limit", "15")  # 8 + 7 samples: shards of different sizes


def _zoo(out: Path, cache: Path, *args, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    e = {**os.environ, "ZOO_CACHE": str(cache), "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "zoo", "run", *FAST, "--out", str(out), *map(str, args)], cwd=ROOT,
                          env=e, capture_output=True, text=True, timeout=timeout)


def _record(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())


def _figures(rec: dict) -> list:
    return [(a["name"], a["value"], a["metrics"], a["num_samples"]) for a in rec["accuracy"]]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def single(tmp_path_factory, cache) -> dict:
    """The single-process run the sharded ones must equal (bs 1 and 4)."""
    out = tmp_path_factory.mktemp("single")
    return _record(_zoo(out, cache, "--batch-sizes", "1,4", *UNEVEN))


def test_sharded_run_equals_single_process_run(tmp_path, cache, single):
    rec = _record(_zoo(tmp_path, cache, "--batch-sizes", "1,4", "--shards", "2", *UNEVEN))
    assert _figures(rec) == _figures(single)  # exact: every figure, to the last digit
    sh = rec["sharding"]
    assert sh["count"] == 2 and sh["cluster"]["mode"] == "local" and sh["retries"] == []
    sizes = [s["num_samples"] for s in sh["shards"]]
    n = single["provenance"]["dataset"]["num_samples"]
    assert sizes == [8, 7] and sum(sizes) == n  # every id once, balanced
    assert rec["provenance"]["dataset"]["ids_sha256"] == single["provenance"]["dataset"]["ids_sha256"]
    assert sh["threads_per_shard"] >= 1 and all(s["threads"] == sh["threads_per_shard"] for s in sh["shards"])
    pipes = [p for p in rec["perf"] if p["scope"] == "pipeline"]
    assert [p["batch_size"] for p in pipes] == [1, 4]
    for p in pipes:
        assert p["num_samples"] == n and len(p["shards"]) == 2
        assert sum(s["num_samples"] for s in p["shards"]) == n
        assert p["throughput"] == pytest.approx(n / p["wall_s"])
    scaling = sh["scaling"]
    assert scaling["reference"]["threads"] == 2 * sh["threads_per_shard"]
    assert 0 < scaling["efficiency"] == pytest.approx(scaling["aggregate_throughput"] / scaling["ideal_throughput"])


def test_killed_worker_is_retried_and_nothing_counted_twice(tmp_path, cache, single):
    """Shard 1's worker is SIGKILLed after 2 samples of its first pipeline call (ZOO_SHARD_FAULT):
    Ray restarts the actor, the shard runs again, the figures are still the single-process run's."""
    proc = _zoo(tmp_path, cache, "--batch-sizes", "1,4", "--shards", "2", "--no-scaling-reference", *UNEVEN,
                env={"ZOO_SHARD_FAULT": "kill:1:2"})
    rec = _record(proc)
    assert _figures(rec) == _figures(single)
    retries = rec["sharding"]["retries"]
    assert [(r["shard"], r["call"], r["attempt"]) for r in retries] == [(1, "bs1 pipeline", 2)], retries
    assert retries[0]["reason"]
    assert [s["retried"] for s in rec["sharding"]["shards"]] == [False, True]
    assert "worker died during bs1 pipeline" in proc.stderr
    for p in rec["perf"]:
        if p["scope"] == "pipeline":
            assert p["num_samples"] == single["provenance"]["dataset"]["num_samples"]


FILL_MIB, MARGIN = 6144, 3 << 30


def test_worker_killed_by_rays_memory_monitor_is_retried(tmp_path, cache, single):
    """Out of memory for real: Ray's memory monitor is set 3 GiB above the machine's use now, and
    shard 1's worker fills 6 GiB after 2 samples of its first pipeline call (ZOO_SHARD_FAULT=oom):
    the monitor kills a worker, Ray restarts it, its shard runs again, the figures are unchanged."""
    from ray._private.utils import get_system_memory, get_used_memory
    total, used = get_system_memory(), get_used_memory()  # Ray's own figures (a cgroup's inside one)
    if total - used < (FILL_MIB << 20) + MARGIN:
        pytest.skip(f"needs {(FILL_MIB << 20) + MARGIN >> 30} GiB free memory; {(total - used) >> 30} GiB free")
    proc = _zoo(tmp_path, cache, "--batch-sizes", "1,4", "--shards", "2", "--shard-retries", "3",
                "--no-scaling-reference", *UNEVEN,
                env={"ZOO_SHARD_FAULT": f"oom:1:2:{FILL_MIB}", "RAY_memory_usage_threshold": f"{(used + MARGIN) / total:.4f}",
                     "RAY_memory_monitor_refresh_ms": "100"})
    rec = _record(proc)
    assert _figures(rec) == _figures(single)
    # the filling worker was killed (unkilled, it fails the run after OOM_WAIT_S); the monitor may
    # kill shard 0's worker first (its choice, not the zoo's): that shard is run again too. Ray
    # reports the call as failed by OutOfMemoryError or its actor as restarted (or, caught in the
    # middle, "unavailable ... The actor is restarting"), whichever it sees first
    retries = rec["sharding"]["retries"]
    assert 1 in [r["shard"] for r in retries if r["call"] == "bs1 pipeline"], retries
    assert all("running low on memory" in r["reason"] or "restart" in r["reason"] for r in retries), retries
    assert "shard 1: worker died during bs1 pipeline" in proc.stderr


def test_shard_that_keeps_dying_fails_the_run_without_a_result(tmp_path, cache):
    out = tmp_path / "results"
    out.mkdir()
    proc = _zoo(out, cache, "--batch-sizes", "1", "--shards", "2", "--shard-retries", "0", "--no-scaling-reference",
                env={"ZOO_SHARD_FAULT": "kill:0:1"})
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("error: shard 0: its worker died 1 times"), proc.stderr[-2000:]
    assert result_files(out) == []


def test_fake_npus_are_placed_by_ray_and_made_visible_per_actor(tmp_path, cache, single):
    """A CPU runtime placed by a device resource: --devices 5,7 gives the local cluster 2 NPU
    units; each actor sees only its own device (ASCEND_RT_VISIBLE_DEVICES) as device 0."""
    rec = _record(_zoo(tmp_path, cache, "--batch-sizes", "4", "--shards", "2", "--shard-resource", "NPU",
                       "--devices", "5,7", "--no-scaling-reference", *UNEVEN))
    assert _figures(rec) == _figures(single)
    sh = rec["sharding"]
    assert sh["resource"] == "NPU" and sh["devices"] == ["5", "7"]
    assert sh["cluster"]["nodes"][0]["resources"]["NPU"] == 2
    envs = sorted(s["environment"]["ASCEND_RT_VISIBLE_DEVICES"] for s in sh["shards"])
    assert envs == ["5", "7"]
    assert all(s["environment"]["ZOO_ASCEND_DEVICE"] == "0" and len(s["ray_ids"]) == 1 for s in sh["shards"])


def test_more_shards_than_devices_is_refused(tmp_path, cache):
    out = tmp_path / "results"
    out.mkdir()
    proc = _zoo(out, cache, "--batch-sizes", "1", "--shards", "3", "--shard-resource", "NPU", "--devices", "0,1")
    assert_clean_failure(proc, out, "--shards 3: the cluster has 2 NPU unit(s); each shard takes one")


def test_no_cluster_at_the_address_is_one_line_and_not_joined_again(tmp_path, cache):
    """Only Ray Client's per-driver server failing to start is joined again; nothing listening at
    the address is Ray's own timeout, reported once with the hint."""
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "results"
    out.mkdir()
    proc = _zoo(out, cache, "--batch-sizes", "1", "--shards", "2", "--cluster", f"ray://127.0.0.1:{port}",
                "--no-scaling-reference", "--limit", "2")
    assert_clean_failure(proc, out, f"--cluster ray://127.0.0.1:{port}: cannot start or join the Ray cluster",
                         "is the head's Ray Client server up?")
    assert "joining again" not in proc.stderr


def test_ctrl_c_stops_the_shards_and_the_local_cluster(tmp_path, cache):
    out = tmp_path / "results"
    out.mkdir()
    env = {**os.environ, "ZOO_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "run", *FAST, "--out", str(out), "--batch-sizes", "1,4",
                             "--shards", "2", "--iters", "200", "--time-budget", "60", "--stable-tolerance", "0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # SIGINT ignored, as a background job of a non-interactive shell starts it:
                            # the zoo sets its own handler, whatever the caller's disposition
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines = read_until(proc, "shard 1:")  # both actors up, timing started
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    err = "".join(lines) + err
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "error: interrupted; no result written"
    assert result_files(out) == []
    time.sleep(2)  # the local cluster the run started is gone with its workers
    from tests.raynodes import shard_workers
    assert shard_workers(cache) == []  # this run's workers (another session's Ray on the machine is not ours)


def test_single_process_run_never_imports_ray(tmp_path, cache):
    code = ("import sys, runpy; sys.argv = ['zoo', 'run', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('zoo', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\nprint('no ray')")
    env = {**os.environ, "ZOO_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, *FAST, "--batch-sizes", "1", "--limit", "2", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("no ray"), proc.stderr[-2000:]


# Loaded by every Python process of the test cluster's nodes (PYTHONPATH): the first Ray Client
# server the head starts for a driver exits at once, as Ray 2.60's sometimes does by itself.
_FAIL_FIRST_CLIENT_SERVER = """import os, sys
if "--mode=specific-server" in sys.argv and "-m" in sys.argv:
    try:
        os.close(os.open(os.environ["ZOO_TEST_FAILED_ONCE"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        pass
    else:
        os._exit(1)
"""


def test_two_node_cluster_places_shards_by_device_and_gives_the_same_figures(tmp_path, cache, single):
    """A real two-node Ray cluster on this machine (`ray start --head`, `ray start --address`), each
    node with 1 CPU and one fake NPU, joined through Ray Client (ray://): one shard per node, its
    device made visible as that node's NPU 0, the figures those of the single-process run. The head's
    first client server for the driver dies at start-up (injected): the zoo joins again."""
    from tests.raynodes import RayNodes
    ray_cli = str(Path(sys.executable).with_name("ray"))
    fault = tmp_path / "fault"
    fault.mkdir()
    (fault / "sitecustomize.py").write_text(_FAIL_FIRST_CLIENT_SERVER)
    node_env = {"PYTHONPATH": os.pathsep.join([str(fault), os.environ.get("PYTHONPATH", "")]),
                "ZOO_TEST_FAILED_ONCE": str(tmp_path / "failed-once"),
                "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "15"}  # how long the proxy waits for a dead server
    with RayNodes(ray_cli, [{"cpus": 1, "resources": {"NPU": 1}}, {"cpus": 1, "resources": {"NPU": 1}}],
                  env=node_env) as nodes:
        proc = _zoo(tmp_path / "out", cache, "--batch-sizes", "4", "--shards", "2", "--cluster", nodes.client,
                    "--shard-resource", "NPU", "--no-scaling-reference", *UNEVEN)
        rec = _record(proc)
    assert (tmp_path / "failed-once").exists()  # the injected failure happened
    assert "could not start this driver's server (attempt 1/3); joining again" in proc.stderr
    assert _figures(rec) == _figures(single)
    sh = rec["sharding"]
    assert sh["cluster"]["mode"] == "address" and sh["cluster"]["address"] == nodes.client
    assert sh["cluster"]["join_attempts"] >= 2
    assert len(sh["cluster"]["nodes"]) == 2
    assert len({s["node_id"] for s in sh["shards"]}) == 2  # placed on both nodes by the NPU resource
    assert [s["environment"]["ASCEND_RT_VISIBLE_DEVICES"] for s in sh["shards"]] == ["0", "0"]
