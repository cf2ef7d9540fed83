"""Issue 21, faults and options on the new surfaces (host side), through real processes and files:
the options of matrix / engine-check / run --docker refused before any work (one line, exit 2,
nothing written), a model process killed by a signal (one line, 128+n instead of invoke's 256-n),
an engine that answers ping but fails every request (a real HTTP server on a unix socket), a
folder named *.json and JSON nested too deeply among results and matrix files, a cluster address
where nothing listens (one line in bounded time, not Ray's 14 minutes of retries)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from runner import envs

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "result_example.json"
needs_unetpp = pytest.mark.skipif(not envs.is_current("unetpp"),
                                  reason="needs the unetpp environment (`invoke test` creates it before the host tests)")


def _invoke(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _one_line(proc: subprocess.CompletedProcess, code: int, *parts: str) -> str:
    """The task failed with `code` and its last stderr line holds every part; no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert lines and all(p in lines[-1] for p in parts), proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- options, before any work

@pytest.mark.parametrize("models", [",", "unetpp,", " , unetpp"])
def test_empty_model_names_are_refused_by_matrix(models, tmp_path):
    proc = _invoke("matrix", "--models", models, "--out", tmp_path / "m")
    _one_line(proc, 2, "models: an empty name")
    assert not (tmp_path / "m").exists()


def test_empty_model_names_are_refused_by_engine_check_before_any_step(tmp_path):
    """`--models ,` ran the whole check (installed and started an engine, built the base image)
    over no model. An engine is given (a server that answers ping) so that a regression runs no
    installation here; nothing but the one line may be printed."""
    with _FailingEngine(tmp_path) as engine:
        proc = _invoke("engine-check", "--models", ",", "--keep-images", "--no-tests", "--base-image", "none",
                       env={"DOCKER_HOST": engine.url})
    _one_line(proc, 2, "--models: an empty model name in ','")
    assert "==" not in proc.stdout and proc.stdout.strip() == ""


@pytest.mark.parametrize("args,flag", [
    (["--runt", "openvino"], "--runt (a prefix of --runtime"),
    (["--ou", "/tmp/elsewhere"], "--ou (a prefix of --out"),
    (["--ou=/tmp/elsewhere"], "--ou=/tmp/elsewhere (a prefix of --out"),
    (["--precis", "int8"], "--precis (a prefix of --precision"),
    (["--batch", "4"], "--batch (a prefix of --batch-sizes"),
    (["--model=erfnet"], "--model=erfnet is given by the job's own fields")])
def test_job_args_may_not_reach_the_jobs_own_flags_by_abbreviation(tmp_path, args, flag):
    """argparse's abbreviations let `--runt openvino` run OpenVINO under an onnxruntime label and
    `--ou DIR` write outside the matrix folder: refused in the file, whole or abbreviated."""
    path = tmp_path / "m.json"
    path.write_text(json.dumps([{"model": "unetpp", "runtime": "onnxruntime", "args": args}]))
    proc = _invoke("matrix", "--file", path, "--dry-run")
    _one_line(proc, 2, f"{path}: job 0: args: {flag}")
    assert "is given by the job's own fields" in proc.stderr


def test_other_job_args_still_pass(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps([{"model": "unetpp", "runtime": "onnxruntime", "args": ["--limit", "2", "--no-peak"]}]))
    proc = _invoke("matrix", "--file", path, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "--limit 2 --no-peak" in proc.stdout


@needs_unetpp
@pytest.mark.parametrize("flag", ["--runt", "--ou", "--mod"])
def test_the_zoo_cli_takes_no_abbreviation(tmp_path, flag):
    """The zoo's parser itself: allow_abbrev off, so a prefix is an unknown argument (exit 2)."""
    proc = subprocess.run([str(envs.env_python("unetpp")), "-m", "zoo", "run", "--model", "unetpp", flag, "x",
                           "--out", str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    _one_line(proc, 2, "unrecognized arguments", flag)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("cluster,what", [("this://x", "--cluster"), ("head:99999", "--cluster"),
                                          (None, "RAY_ADDRESS")])
def test_matrix_cluster_of_an_unknown_form_is_refused_before_ray(tmp_path, cluster, what):
    """Ray imports the module named before `://` (`this://x` printed the Zen of Python into the
    output): the form is checked before Ray is imported, RAY_ADDRESS too."""
    args = ["--cluster", cluster] if cluster else []
    env = {} if cluster else {"RAY_ADDRESS": "this://x"}
    proc = _invoke("matrix", "--models", "unetpp", "--runtimes", "onnxruntime", "--precisions", "fp32",
                   *args, "--out", tmp_path / "m", env=env)
    _one_line(proc, 2, f"{what} must be local, auto, ray://HOST:PORT or HOST:PORT")
    assert "Zen of Python" not in proc.stdout + proc.stderr
    assert not (tmp_path / "m").exists()


def test_matrix_cluster_with_nothing_listening_fails_in_bounded_time(tmp_path):
    port = _free_port()
    started = time.monotonic()
    proc = _invoke("matrix", "--models", "unetpp", "--runtimes", "onnxruntime", "--precisions", "fp32",
                   "--cluster", f"127.0.0.1:{port}", "--out", tmp_path / "m", env={"ZOO_CLUSTER_TIMEOUT": "5"})
    _one_line(proc, 2, f"--cluster 127.0.0.1:{port}: cannot start or join the Ray cluster: nothing answers",
              "ZOO_CLUSTER_TIMEOUT=5 s")
    assert time.monotonic() - started < 60
    assert not (tmp_path / "m" / "matrix.json").exists()


@pytest.mark.parametrize("cluster", ["ray://127.0.0.1:10001", "127.0.0.1:6379", "auto"])
def test_docker_run_refuses_a_cluster_it_cannot_reach(tmp_path, cluster):
    """The container runs with --network none: a sharded run there can only use a local cluster."""
    proc = _invoke("run", "--model", "unetpp", "--docker", "--shards", "2", "--cluster", cluster,
                   "--out", tmp_path / "r")
    _one_line(proc, 2, f"--cluster {cluster} cannot be used with --docker")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- a model process killed

@needs_unetpp
@pytest.mark.parametrize("sig,code,line", [
    (signal.SIGKILL, 137, "error: invoke run: the model process was killed by SIGKILL (out of memory?)"),
    (signal.SIGUSR1, 138, "error: invoke run: the model process was killed by SIGUSR1")])
def test_a_killed_model_process_is_one_line_and_128_plus_n(tmp_path, sig, code, line):
    """The OOM killer's SIGKILL gave `invoke run` exit 247 (256-9) and no line."""
    out = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "run", "--model", "unetpp", "--batch-sizes", "1",
                             "--iters", "100000", "--time-budget", "600", "--stable-tolerance", "0", "--no-peak",
                             "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "ZOO_CACHE": str(tmp_path / "cache")})
    try:
        for text in proc.stderr:  # the model process's progress comes through invoke's stderr
            if text.startswith("[1/7]"):
                break
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert children, "the model process should be running"
        os.kill(int(children[0]), sig)
        rest = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, rest[-1500:]
    assert rest.strip().splitlines()[-1] == line
    assert "Traceback" not in rest
    assert not [p for p in out.rglob("*.json")]


# ---------------------------------------------------------------- an engine that fails requests

class _FailingEngine:
    """A Docker engine that answers the SDK's ping and version and fails every other request
    with HTTP 500 (a daemon in trouble): a real server process on a unix socket."""

    SCRIPT = textwrap.dedent('''
        import http.server, json, os, socketserver, sys
        class H(http.server.BaseHTTPRequestHandler):
            def answer(self):
                path = self.path.split("?")[0]
                code, body = 500, json.dumps({"message": "the engine failed this request"})
                if path.endswith("/_ping"):
                    code, body = 200, "OK"
                elif path.endswith("/version"):
                    code, body = 200, json.dumps({"ApiVersion": "1.41", "Version": "20.10.24"})
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            do_GET = do_POST = do_DELETE = do_HEAD = answer
            def log_message(self, *a):
                pass
            def address_string(self):
                return "unix"
        class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True
        S(sys.argv[1], H).serve_forever()
        ''')

    def __init__(self, tmp_path: Path):
        self.socket = tmp_path / "engine.sock"
        self.url = f"unix://{self.socket}"
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT, str(self.socket)])
        deadline = time.monotonic() + 10
        while not self.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.socket.exists(), "the fake engine did not start"
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.mark.parametrize("args", [["prune-images"], ["prune-images", "--dry-run"]])
def test_an_engine_that_fails_requests_is_one_line(tmp_path, args):
    """docker.errors.APIError from the SDK was a traceback (image listing of prune-images)."""
    with _FailingEngine(tmp_path) as engine:
        proc = _invoke(*args, env={"DOCKER_HOST": engine.url})
    _one_line(proc, 2, "pruning the zoo's images on the engine at", "failed: the engine failed this request")


def test_build_and_docker_run_on_a_failing_engine_are_one_line(tmp_path):
    with _FailingEngine(tmp_path) as engine:
        build = _invoke("build", "--model", "unetpp", env={"DOCKER_HOST": engine.url})
        run = _invoke("run", "--model", "unetpp", "--docker", "--out", tmp_path / "r", env={"DOCKER_HOST": engine.url})
    _one_line(build, 2, "failed: the engine failed this request")
    _one_line(run, 2, "failed: the engine failed this request")


# ---------------------------------------------------------------- results and matrix files

def _results(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "run.json").write_text(FIXTURE.read_text())
    return folder


def test_a_folder_named_json_among_results_is_one_line(tmp_path):
    base, new = _results(tmp_path, "base"), _results(tmp_path, "new")
    (new / "x.json").mkdir()
    proc = _invoke("compare", base, new)
    _one_line(proc, 2, f"{new / 'x.json'}: a folder named like a result file")
    report = _invoke("report", "--results", new, "--out", tmp_path / "rep")
    _one_line(report, 2, f"{new / 'x.json'}: a folder named like a result file")
    assert not (tmp_path / "rep").exists() or not list((tmp_path / "rep").iterdir())
    # a folder given where a result file is expected is named for what it is
    score = _invoke("score", new)
    _one_line(score, 2, f"{new}: a folder, not a result file")


def test_json_nested_too_deeply_is_one_line(tmp_path):
    base, new = _results(tmp_path, "base"), _results(tmp_path, "new")
    deep = "[" * 200_000 + "]" * 200_000
    (new / "deep.json").write_text(deep)
    proc = _invoke("compare", base, new)
    _one_line(proc, 2, f"{new / 'deep.json'}: not a result (JSON nested too deeply to read)")
    single = _invoke("compare", base, new / "deep.json")
    _one_line(single, 2, f"{new / 'deep.json'}: not a result (JSON nested too deeply to read)")
    matrix_file = tmp_path / "matrix.json"
    matrix_file.write_text(deep)
    matrix = _invoke("matrix", "--file", matrix_file, "--dry-run")
    _one_line(matrix, 2, f"{matrix_file}: nested too deeply to be a matrix file")
