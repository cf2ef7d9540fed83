"""The container of `invoke run --docker`, checked on a real Docker engine (issue 14, item 5 and
defects 3-6).

The container is started with runner/docker.py's own run arguments (``prepare_run`` -> the
``RunSpec`` whose ``sdk_kwargs`` ``run`` uses, and whose ``argv`` ``--dry-run`` prints), only
the entrypoint replaced by a probe (tests/runner/docker_probe.py) that inspects itself from
inside: its ids, capabilities, no-new-privileges, PID 1, every mount, where it can write, its
network interfaces, and whether it can connect to the host (a listener the test opens on the
docker0 bridge: a control container on the bridge network reaches it, so the check can fail)
or to a public address. Then the zoo itself: ``docker stop`` (143, promptly), Ctrl-C and
SIGTERM to `invoke run --docker` (130/143 and one line), a container that cannot start (never
left behind), ``nvidia-smi`` on PATH with the CPU-only image, and a whole run whose record the
host validates.

Every test here needs a reachable daemon and the image ``zoo/unetpp:latest``
(``invoke build --model unetpp``); without them they skip, saying which is missing.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from docker import errors as rd_errors

from runner import ROOT
from runner import docker as rd
from runner import engine
from runner.validate import load_result

MODEL = "unetpp"
IMAGE = rd.image_tag(MODEL)
PROBE = Path(__file__).with_name("docker_probe.py")
# Places the probe tries to write: the root filesystem (its top, the code, the user's home, a
# bind-mounted /etc file, /var/tmp, the results' parent) must refuse with EROFS; the run's tmpfs
# (/tmp, the cache) and the model's results mount must accept.
READ_ONLY = ("/probe", "/opt/zoo/probe", "/opt/zoo/zoo/probe", "/home/zoo/probe", "/etc/hosts",
             "/var/tmp/probe", "/results/probe", "/usr/local/bin/probe")
WRITABLE = ("/tmp/probe", "/cache/probe", f"/results/{MODEL}/probe")
PUBLIC = "1.1.1.1:443"
# Kernel and memory file systems: not the host's disk.
MEMORY_FS = {"tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"}
# A long run (still timing when signalled): the zoo's run options, in the container.
LONG_RUN = ["--batch-sizes", "1", "--iters", "100000", "--time-budget", "600",
            "--stable-tolerance", "0", "--no-peak"]


def _engine():
    """A client of a reachable daemon that has the image, else the reason to skip."""
    try:
        client = engine.connect()
    except rd.DockerError as exc:
        return None, f"no Docker engine: {exc}"
    try:
        rd.image_labels(client, IMAGE)
    except rd.DockerError as exc:
        return None, f"{exc} (invoke build --model {MODEL})"
    return client, None


_CLIENT, _REASON = _engine()
pytestmark = [pytest.mark.engine, pytest.mark.skipif(_CLIENT is None, reason=_REASON or "")]


@pytest.fixture
def client():
    return _CLIENT


@pytest.fixture
def spec(tmp_path):
    """The RunSpec of `invoke run --model unetpp --docker --out <tmp>`, its results folder
    prepared as `run` prepares it."""
    spec = rd.prepare_run(MODEL, out=tmp_path / "results")
    engine._prepare_results(spec)
    return spec


@pytest.fixture
def host_listener(client):
    """A TCP listener on the host's docker0 address (the bridge gateway): (host, port)."""
    gateway = client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]
    server = socket.socket()
    server.bind((gateway, 0))
    server.listen(8)
    yield gateway, server.getsockname()[1]
    server.close()


def _probe_args(targets):
    return ["-c", PROBE.read_text(), ",".join(READ_ONLY + WRITABLE), ",".join(targets)]


def _finish(container, timeout=120):
    """Wait for the container; its exit code and output; remove it."""
    try:
        code = container.wait(timeout=timeout)["StatusCode"]
        return code, container.logs().decode()
    finally:
        _remove(container)


def _remove(container):
    try:
        container.remove(force=True)
    except rd_errors.NotFound:
        pass


def _probe(client, spec, targets, **extra):
    """Run the probe in ``spec``'s container (the SDK arguments `run` uses); its report."""
    code, text = _finish(engine._start(client, spec, _probe_args(targets), entrypoint=["python"], **extra))
    assert code == 0, text
    return json.loads(text.strip().splitlines()[-1])


def _check_confined(report, spec, listener):
    uid, gid = (int(x) for x in spec.user.split(":"))
    assert (report["uid"], report["euid"], report["gid"]) == (uid, uid, gid) and uid != 0 and gid != 0
    assert 0 not in report["groups"]
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(report["status"][cap], 16) == 0, (cap, report["status"])
    assert report["status"]["NoNewPrivs"] == "1"
    assert report["setuid0"] == "EPERM"
    assert report["pid1"].endswith("docker-init"), "the engine's init must be PID 1"
    for path in READ_ONLY:
        assert report["writes"][path] == errno.errorcode[errno.EROFS], (path, report["writes"])
    for path in WRITABLE:
        assert report["writes"][path] == "ok", (path, report["writes"])
    mounts = {m["point"]: m for m in report["mounts"]}
    assert mounts["/"]["opts"].split(",")[0] == "ro"
    rw = {p for p, m in mounts.items() if m["opts"].split(",")[0] == "rw"}
    disk_rw = {p for p in rw if mounts[p]["fstype"] not in MEMORY_FS}
    assert disk_rw == {f"/results/{MODEL}"}, "the results mount must be the only writable host path"
    assert mounts[f"/results/{MODEL}"]["root"] == str(spec.results)
    memory_rw = {p for p in rw - disk_rw if not p.startswith(("/dev", "/proc", "/sys"))}
    assert memory_rw == {"/tmp", "/cache"}
    assert report["interfaces"] == ["lo"]
    host = f"{listener[0]}:{listener[1]}"
    assert report["connect"][host] != "ok" and report["connect"][PUBLIC] != "ok", report["connect"]


def test_the_container_of_a_docker_run_is_confined(client, spec, host_listener):
    """What `run` starts (RunSpec.sdk_kwargs), inspected from inside."""
    report = _probe(client, spec, [f"{host_listener[0]}:{host_listener[1]}", PUBLIC])
    _check_confined(report, spec, host_listener)


def test_the_network_check_can_fail(client, spec, host_listener):
    """Control: the same probe on the bridge network reaches the host's listener."""
    kwargs = {**spec.sdk_kwargs(), "network_mode": "bridge"}
    container = client.containers.create(spec.image, _probe_args([f"{host_listener[0]}:{host_listener[1]}"]),
                                         entrypoint=["python"], **kwargs)
    container.start()
    code, text = _finish(container)
    report = json.loads(text.strip().splitlines()[-1])
    assert "eth0" in report["interfaces"]
    assert report["connect"][f"{host_listener[0]}:{host_listener[1]}"] == "ok"


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI on PATH")
def test_the_printed_command_is_confined_too(spec, host_listener):
    """The `docker run` line `--dry-run` prints (RunSpec.argv), run by the docker CLI."""
    argv = spec.argv()
    at = argv.index(spec.image)
    targets = [f"{host_listener[0]}:{host_listener[1]}", PUBLIC]
    proc = subprocess.run([*argv[:at], "--entrypoint", "python", spec.image, *_probe_args(targets)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    _check_confined(json.loads(proc.stdout.strip().splitlines()[-1]), spec, host_listener)


def _wait_for(container, text, timeout=300.0):
    deadline = time.monotonic() + timeout
    while text.encode() not in container.logs():
        assert time.monotonic() < deadline, container.logs().decode()[-2000:]
        container.reload()
        assert container.status == "running", container.logs().decode()[-2000:]
        time.sleep(0.2)


@pytest.mark.parametrize("stage", ["[1/7]", "[6/7]"])  # starting, and timing the model
def test_docker_stop_ends_the_zoo_promptly(client, spec, stage):
    """Defect 5: `docker stop` (SIGTERM through the init) stops `python -m zoo` with its one
    line and 143 well within the stop timeout (137 = killed after it), writing nothing."""
    spec = dataclasses.replace(spec, command=(*spec.command, *LONG_RUN))
    container = engine._start(client, spec)
    try:
        _wait_for(container, stage)
        time.sleep(1.0)
        started = time.monotonic()
        container.stop(timeout=10)
        took = time.monotonic() - started
        code, text = _finish(container)
    finally:
        _remove(container)
    assert code == 143, text[-2000:]
    assert took < 8, f"docker stop took {took:.1f} s"
    assert text.strip().splitlines()[-1] == "error: terminated (SIGTERM); no result written"
    assert not [p for p in spec.results.rglob("*") if p.is_file()]


def _containers_of(client, folder):
    """The containers (any state) with a mount from under ``folder``: this test's own (other
    runs of the image may share the engine)."""
    return [c.short_id for c in client.containers.list(all=True, filters={"ancestor": IMAGE})
            if any(str(m.get("Source", "")).startswith(str(folder)) for m in c.attrs.get("Mounts", []))]


def test_a_container_that_cannot_start_is_removed(client, spec, tmp_path):
    """Defect 3: --gpus all without the NVIDIA container toolkit fails at start (as on a GPU
    host), and so does a device that vanished: a DockerError, and no "Created" container left
    behind (the SDK's containers.run leaves one: create succeeded, start failed)."""
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidia0").touch()
    with pytest.raises(rd.DockerError, match=f"^starting {IMAGE} failed: "):
        rd.run(MODEL, out=spec.out, device_type="nvidia", dev_root=dev, log=lambda _: None)
    gone = rd.Devices("ascend", ((str(dev / "davinci0"), "/dev/davinci0"),))
    with pytest.raises(rd.DockerError, match=f"^starting {IMAGE} failed: .*davinci0"):
        engine._start(client, dataclasses.replace(spec, devices=gone))
    assert _containers_of(client, tmp_path) == []


def test_nvidia_smi_on_path_does_not_give_the_cpu_image_gpus(client, spec, tmp_path, monkeypatch):
    """Defect 4: with nvidia-smi on PATH (and /dev/nvidia0), device auto-detection passes no
    GPU to the zoo's CPU-only image: the container starts (the zoo refuses the bad option
    with its exit 2), where --gpus all would fail to start it here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidia0").touch()
    assert rd.label_devices(rd.image_labels(client, IMAGE)) == ("cpu",)
    lines = []
    assert rd.run(MODEL, out=spec.out, dev_root=dev, zoo_args=["--batch-sizes", "0"], log=lines.append) == 2
    assert "argument --batch-sizes: batch sizes must be positive" in lines[-1]  # the zoo ran and refused it


def _invoke_run(out, *extra):
    return subprocess.Popen([sys.executable, "-m", "invoke", "run", "--model", MODEL, "--docker",
                             "--out", str(out), *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("sig,code,line", [(signal.SIGINT, 130, "error: interrupted; no result written"),
                                           (signal.SIGTERM, 143, "error: terminated (SIGTERM); no result written")])
def test_a_signal_to_invoke_run_docker_stops_the_container(client, tmp_path, sig, code, line):
    """Defect 6: Ctrl-C (SIGINT) or SIGTERM during `invoke run --docker` is forwarded to the
    container: one line, exit 130/143, no result, no container left."""
    out = tmp_path / "results"
    proc = _invoke_run(out, *LONG_RUN)
    try:
        lines = []
        for text in proc.stdout:
            lines.append(text.rstrip("\n"))
            if text.startswith("[6/7]"):  # timing the model
                break
        time.sleep(1.0)
        proc.send_signal(sig)
        rest = proc.stdout.read().splitlines()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, "\n".join(lines + rest)[-2000:]
    assert rest.count(line) == 1 and not [r for r in rest if r.startswith("error:") and r != line], rest
    assert "Traceback" not in "\n".join(rest)
    assert not [p for p in out.rglob("*") if p.is_file()]
    assert _containers_of(client, tmp_path) == []


def test_invoke_run_docker_writes_a_valid_record(client, tmp_path):
    """`invoke run --model unetpp --docker` end to end: a record the host validates, in the
    results folder, owned by the container's (non-root) user: the caller's uid, or 1000 for a
    root caller (who gave it the folder)."""
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "invoke", "run", "--model", MODEL, "--docker",
                           "--batch-sizes", "1,4", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    (record,) = (out / MODEL).glob("*.json")
    rec = load_result(record)  # valid against the schema and the record rules
    assert f"result: {record} (schema {rec['schema_version']}, status ok)" in proc.stdout  # the host's summary
    assert rec["model"]["name"] == MODEL and {p["batch_size"] for p in rec["perf"]} == {1, 4}
    assert all(p["status"] == "ok" for p in rec["perf"]) and rec["environment"]["in_container"] is True
    uid, gid = (int(x) for x in rd.container_user().split(":"))
    assert (record.stat().st_uid, record.stat().st_gid) == (uid, gid) != (0, 0)
