"""`invoke matrix` (runner/matrix.py, issue 15): the matrix derived from the real manifests, its
filters and --file (and a bad file's one-line error), the runtime table against the runtimes' own
declarations, and real runs on a local Ray cluster: a good job in the model's environment (Ray's
py_executable, and the host-worker fallback), a failing job listed with its error, the report,
a non-zero exit, and Ctrl-C / SIGTERM cancelling the jobs with no report."""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from runner import matrix as mx
from runner.envs import env_python
from runner.validate import load_result
from zoo import registry

ROOT = Path(__file__).resolve().parents[2]
CPU_RUNTIMES = ("onnxruntime", "openvino", "torch")
UNETPP_PY = env_python("unetpp")
HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_run = pytest.mark.skipif(not (UNETPP_PY.exists() and HAVE_RAY),
                               reason="a real matrix run needs .venvs/unetpp (invoke setup --model unetpp) and ray "
                                      "in the host python (requirements-cluster.txt; invoke test installs it)")
FAST = ["--limit", "4", "--no-peak", "--iters", "2", "--warmup", "1"]


def _manifest(model: str) -> dict:
    return yaml.safe_load(registry.find(model).manifest.read_text())


def _invoke(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "matrix", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


# ---------------------------------------------------------------- the matrix as data

def test_derived_from_every_real_manifest():
    """Every model x CPU runtime x (the manifest's verify tolerances that the runtime runs), over the
    manifest's benchmark batch sizes; no GPU/NPU runtime on a CPU-only machine."""
    jobs = mx.derive(devices={"cpu"})
    models = registry.names()  # models/ and ZOO_MODEL_DIRS: however many there are
    assert {"unetpp", "erfnet", "fastscnn", "fcn8s", "nasfpn"} <= set(models)
    expected = set()
    for m in models:
        tolerances = _manifest(m)["verify"]["tolerance"]
        expected |= {(m, r, p) for r in CPU_RUNTIMES for p in tolerances if p in mx.runtime_table()[r][1]}
    assert {(j.model, j.runtime, j.precision) for j in jobs} == expected
    for j in jobs:
        assert list(j.batch_sizes) == _manifest(j.model)["benchmark"]["batch_sizes"]
    unetpp = {(j.runtime, j.precision) for j in jobs if j.model == "unetpp"}
    assert unetpp == {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "bf16"),
                      ("openvino", "int8"), ("torch", "fp32"), ("torch", "bf16")}  # fp16: no tolerance declared


def test_device_runtimes_only_where_the_device_is():
    gpu = {(j.runtime, j.precision) for j in mx.derive(models="unetpp", devices={"cpu", "cuda"})
           if mx.runtime_table()[j.runtime][0] != "cpu"}
    assert gpu == {("onnxruntime-cuda", "fp32"), ("onnxruntime-trt", "fp32"), ("onnxruntime-trt", "int8")}
    npu = {j.runtime for j in mx.derive(models="unetpp", devices={"cpu", "npu"})}
    assert npu == {*CPU_RUNTIMES, "ascend"}


def test_local_devices_from_dev_entries(tmp_path):
    assert mx.local_devices(tmp_path) == {"cpu"}
    (tmp_path / "davinci0").touch()
    (tmp_path / "davinci_manager").touch()
    assert mx.local_devices(tmp_path) == {"cpu", "npu"}
    (tmp_path / "nvidia1").touch()
    assert mx.local_devices(tmp_path) == {"cpu", "npu", "cuda"}


@pytest.mark.skipif(not UNETPP_PY.exists(), reason="needs .venvs/unetpp (the runtimes' engines)")
def test_runtime_table_matches_the_runtimes_declarations():
    """The matrix's runtime table, read on the host (no numpy, no engines needed), equals each zoo
    runtime's `device_type` and `precisions` read in a model environment, where the engines are."""
    code = ("import json; from zoo.runtimes import RUNTIMES; "
            "print(json.dumps({n: [c.device_type, list(c.precisions)] for n, c in RUNTIMES.items()}))")
    proc = subprocess.run([str(UNETPP_PY), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    declared = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {n: [d, list(p)] for n, (d, p) in mx.runtime_table().items()} == declared
    assert list(mx.runtime_table()) == list(declared)  # one order: the registry's


def test_filters_and_batch_sizes():
    jobs = mx.plan(models="unetpp,erfnet", runtimes="torch", precisions="bf16", batch_sizes="1,2")
    assert [(j.id, j.batch_sizes) for j in jobs] == [("unetpp/torch/bf16", (1, 2)), ("erfnet/torch/bf16", (1, 2))]
    assert [j.id for j in mx.plan(models="nasfpn", runtimes="onnxruntime")] == ["nasfpn/onnxruntime/fp32",
                                                                                 "nasfpn/onnxruntime/int8"]


@pytest.mark.parametrize("kw,message", [
    ({"models": "unetpp,nope"}, f"unknown model 'nope' (known: {', '.join(registry.names())})"),
    ({"runtimes": "tensorflow"}, "unknown runtime 'tensorflow'"),
    ({"precisions": "fp8"}, "unknown precision 'fp8'"),
    ({"batch_sizes": "1,0"}, "batch_sizes: expected positive integers"),
    ({"runtimes": "onnxruntime", "precisions": "bf16"}, "the matrix is empty"),
])
def test_bad_filters_are_one_line_errors(kw, message):
    with pytest.raises(mx.MatrixError) as err:
        mx.plan(**kw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_file_of_jobs_and_file_of_filters(tmp_path):
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps([
        {"model": "unetpp", "runtime": "openvino", "precision": "int8", "batch_sizes": [2]},
        {"model": "unetpp", "runtime": "openvino", "precision": "int8", "name": "mixed", "args": ["--limit", "4"]},
        {"model": "erfnet", "runtime": "torch"}]))
    jobs = mx.plan(file=jobs_file)
    assert [(j.id, j.batch_sizes, j.args) for j in jobs] == [
        ("unetpp/openvino/int8", (2,), ()), ("unetpp/openvino/int8/mixed", (1, 4, 8, 16, 32, 64), ("--limit", "4")),
        ("erfnet/torch/fp32", (1, 4, 8, 16), ())]
    assert [j.id for j in mx.plan(file=jobs_file, models="erfnet", batch_sizes="1")] == ["erfnet/torch/fp32"]
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"models": ["fastscnn"], "precisions": ["int8"], "batch_sizes": [1]}))
    assert [(j.id, j.batch_sizes) for j in mx.plan(file=filters, devices={"cpu"})] == [
        ("fastscnn/onnxruntime/int8", (1,)), ("fastscnn/openvino/int8", (1,))]


@pytest.mark.parametrize("content,message", [
    ("[{]", "not valid JSON"),
    ("[]", "expected a non-empty list of jobs or an object of filters"),
    ('"unetpp"', "expected a non-empty list of jobs or an object of filters, got str"),
    ('{"model": "unetpp"}', "unknown filter 'model' (filters: models, runtimes, precisions, batch_sizes"),
    ('{"models": "unetpp"}', "models: expected a list, got 'unetpp'"),
    ('{"models": []}', "models: expected a non-empty list of names"),
    ('[{"runtime": "torch"}]', "job 0: missing 'model'"),
    ('[{"model": "unetpp", "runtime": "torch", "threads": 2}]', "job 0: unknown field 'threads'"),
    ('[{"model": "../models/unetpp", "runtime": "torch"}]', "job 0: unknown model '../models/unetpp'"),
    ('[{"model": "unetpp", "runtime": "tvm"}]', "job 0: unknown runtime 'tvm'"),
    ('[{"model": "unetpp", "runtime": "torch", "precision": "half"}]', "job 0: precision must be one of"),
    ('[{"model": "unetpp", "runtime": "torch", "batch_sizes": [0]}]', "job 0: batch_sizes: expected positive"),
    ('[{"model": "unetpp", "runtime": "torch", "args": "--limit 4"}]', "job 0: args: expected a list of strings"),
    ('[{"model": "unetpp", "runtime": "torch", "args": ["--out=/x"]}]', "--out=/x is given by the job's own fields"),
    ('[{"model": "unetpp", "runtime": "torch", "name": "a b"}]', "job 0: name: letters, digits"),
    ('[{"model": "unetpp", "runtime": "torch"}, {"model": "unetpp", "runtime": "torch", "precision": "fp32"}]',
     "job 'unetpp/torch/fp32' is given twice"),
])
def test_bad_file_is_one_line_naming_the_file(tmp_path, content, message):
    bad = tmp_path / "matrix.json"
    bad.write_text(content)
    with pytest.raises(mx.MatrixError) as err:
        mx.plan(file=bad)
    text = str(err.value)
    assert text.startswith(f"{bad}: ") and message in text and "\n" not in text, text


def test_bad_file_through_invoke(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text('[{"model": "unetpp", "runtime": "torch", "precision": "int8x"}]')
    proc = _invoke("--file", bad, "--dry-run")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (f"error: invoke matrix: {bad}: job 0: precision must be one of "
                                                    f"fp32, bf16, fp16, int8, got 'int8x'")
    missing = _invoke("--file", tmp_path / "none.json", "--dry-run")
    assert missing.returncode == 2 and f"error: invoke matrix: {tmp_path / 'none.json'}: no such matrix file" in missing.stderr


def test_single_run_options_refused_and_cluster_checked():
    proc = _invoke("--runtime", "openvino", "--dry-run")
    assert proc.returncode == 2 and "--runtime is a single run's option" in proc.stderr
    proc = _invoke("--shards", "2", "--dry-run")
    assert proc.returncode == 2 and "--shards is a single run's option" in proc.stderr
    proc = _invoke("--cluster", "not an address", "--dry-run")
    assert proc.returncode == 2 and "--cluster must be local, auto, ray://HOST:PORT or HOST:PORT" in proc.stderr


@pytest.mark.parametrize("given,env,address", [
    (None, None, "local"), (None, "10.0.0.2:6379", "10.0.0.2:6379"), ("local", "10.0.0.2:6379", "local"),
    ("auto", None, "auto"), ("ray://head:10001", None, "ray://head:10001"), ("head.example:6379", None, "head.example:6379"),
])
def test_cluster_address(monkeypatch, given, env, address):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)
    assert mx.cluster_address(given) == address


def test_dry_run_prints_each_jobs_command_without_ray(tmp_path):
    """--dry-run: the matrix and each job's command (the model env's python, the run options, the
    job's threads = its CPU slots); tasks.py and the dry run never import Ray."""
    proc = _invoke("--models", "unetpp", "--runtimes", "openvino", "--precisions", "fp32,bf16", "--batch-sizes", "1,4",
                   "--limit", "4", "--no-peak", "--cpus-per-job", "2", "--out", tmp_path / "m", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "matrix: 2 job(s)"
    folder = tmp_path / "m" / "jobs" / "unetpp-openvino-bf16"
    assert (f"  unetpp/openvino/bf16: {UNETPP_PY} -m zoo run --model unetpp --runtime openvino --precision bf16 "
            f"--batch-sizes 1,4 --out {folder} --limit 4 --no-peak --threads 2") in lines
    assert not (tmp_path / "m").exists()
    code = "import sys, tasks; from runner import matrix; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_calibration_options_reach_only_the_jobs_that_calibrate(tmp_path):
    """--calib-size/--calib-seed given to a matrix go to its int8 jobs only: an fp32 run refuses a
    calibration option it would not read, so passing them to every job would fail the fp32 ones."""
    proc = _invoke("--models", "unetpp", "--runtimes", "onnxruntime", "--precisions", "fp32,int8", "--batch-sizes", "1",
                   "--calib-size", "8", "--calib-seed", "0", "--out", tmp_path / "m", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    cmds = {line.split(":")[0].strip(): line for line in proc.stdout.splitlines() if " -m zoo run " in line}
    assert "--calib-size 8 --calib-seed 0" in cmds["unetpp/onnxruntime/int8"]
    assert "--calib" not in cmds["unetpp/onnxruntime/fp32"]


def test_error_line_of_a_job(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("[1/7] config\nerror: unetpp: unknown model option(s) x\n")
    assert mx._error_line(log, 2) == "exit 2: unetpp: unknown model option(s) x"
    log.write_text("Segmentation fault\n")
    assert mx._error_line(log, -11) == "killed by SIGSEGV: Segmentation fault"
    assert mx._error_line(log, 0) is None


# ---------------------------------------------------------------- real runs on a local Ray cluster

@needs_run
def test_real_matrix_with_a_failing_job(tmp_path):
    """Two real jobs on a local Ray cluster: unetpp/onnxruntime/fp32 (in .venvs/unetpp) succeeds, its
    record valid and in the report; a bad model option fails with the zoo's one-line error, listed;
    (on a machine without a GPU) a GPU job is listed as not run; exit 1."""
    jobs = [{"model": "unetpp", "runtime": "onnxruntime", "precision": "fp32", "batch_sizes": [1]},
            {"model": "unetpp", "runtime": "onnxruntime", "precision": "fp32", "batch_sizes": [1], "name": "bad",
             "args": ["--option", "nonsense=1"]}]
    no_gpu = "cuda" not in mx.local_devices()
    if no_gpu:
        jobs.append({"model": "unetpp", "runtime": "onnxruntime-cuda", "precision": "fp32", "batch_sizes": [1]})
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps(jobs))
    out, cache = tmp_path / "matrix", tmp_path / "cache"
    started, ray_in_env = time.monotonic(), mx.env_has_ray("unetpp")
    proc = _invoke("--file", spec, *FAST, "--out", out, env={"ZOO_CACHE": str(cache)})
    wall, ray_in_env = time.monotonic() - started, ray_in_env and mx.env_has_ray("unetpp")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"error: invoke matrix: {len(jobs) - 1} of {len(jobs)} job(s) failed "
                                                    f"(see {out / 'matrix.md'})")
    assert f"matrix: {len(jobs)}/{len(jobs)} jobs done ({len(jobs) - 1} failed), last: " in proc.stdout
    summary = json.loads((out / "matrix.json").read_text())
    rows = {r["id"]: r for r in summary["jobs"]}
    good, bad = rows["unetpp/onnxruntime/fp32"], rows["unetpp/onnxruntime/fp32/bad"]
    assert good["status"] == "ok" and good["exit_code"] == 0 and good["error"] is None
    record = load_result(out / good["result"])  # valid against schema/
    assert record["runtime"]["name"] == "onnxruntime" and [p["batch_size"] for p in record["perf"]] == [1, 1]
    assert record["provenance"]["dataset"]["num_samples"] == 4
    assert any(cache.iterdir()), "the job ran with the driver's ZOO_CACHE"
    # the task itself ran on the model's python (runtime_env py_executable) when that has Ray, else on the host's
    assert good["worker_python"] == {"env": str(UNETPP_PY), "host": sys.executable}[good["mode"]]
    assert good["mode"] == "env" or not ray_in_env
    assert bad["status"] == "failed" and bad["exit_code"] == 2 and bad["result"] is None
    assert bad["error"].startswith("exit 2: unetpp: unknown model option(s) nonsense")
    if no_gpu:
        gpu = rows["unetpp/onnxruntime-cuda/fp32"]
        assert gpu["status"] == "failed" and gpu["error"] == "not run: no node of the cluster has 1 CPU, 1 GPU (Ray resources)"
    report = (out / summary["report"]["markdown"]).read_text()
    assert record["run_id"] in report or "onnxruntime" in report
    assert "unknown model option(s) nonsense" in (out / "matrix.md").read_text()
    print(f"matrix of {len(jobs)} jobs: {wall:.1f} s wall (job {good['wall_s']:.1f} s)")


@needs_run
def test_host_worker_fallback_runs_the_model_python(tmp_path, monkeypatch):
    """A model environment without the driver's Ray: the task runs on a host worker, which starts
    the model's python (`python -m zoo run`); same result, validated."""
    monkeypatch.setattr(mx, "env_has_ray", lambda model: False)
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    job = mx.Job("unetpp", "onnxruntime", "fp32", (1,))
    lines = []
    summary = mx.run_matrix([job], tmp_path / "m", [*FAST, "--threads", "1"], cluster="local", cpus_per_job=1,
                            log=lines.append)
    (row,) = summary["jobs"]
    assert row["status"] == "ok", row
    assert row["mode"] == "host" and row["worker_python"] == sys.executable
    assert row["command"].startswith(f"{UNETPP_PY} -m zoo run --model unetpp --runtime onnxruntime")
    load_result(tmp_path / "m" / row["result"])
    assert lines[-1].startswith("matrix: 1/1 jobs done (0 failed), last: unetpp/onnxruntime/fp32 ok ")
    assert (tmp_path / "m" / "report.md").is_file() and (tmp_path / "m" / "matrix.md").is_file()
    import ray
    assert not ray.is_initialized()


@needs_run
@pytest.mark.parametrize("how,code,line", [
    ("group-sigint", 130, "error: invoke matrix: interrupted: 2 job(s) cancelled, 0 finished; no report written"),
    ("sigterm", 143, "error: invoke matrix: terminated (SIGTERM): 2 job(s) cancelled, 0 finished; no report written")])
def test_interrupt_cancels_the_jobs_and_writes_no_report(tmp_path, how, code, line):
    """Ctrl-C (SIGINT to the terminal's process group: invoke, and the Ray processes it started) or
    SIGTERM to invoke while two jobs infer: each job's zoo process stops with its own line, Ray is
    shut down, exit 130/143, no report and no summary."""
    out = tmp_path / "m"
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "matrix", "--models", "unetpp", "--runtimes", "onnxruntime,torch",
         "--precisions", "fp32", "--batch-sizes", "1", "--no-peak", "--iters", "100000", "--time-budget", "600",
         "--stable-tolerance", "0", "--out", str(out)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True, env={**os.environ, "ZOO_CACHE": str(tmp_path / "cache")},
        # SIGINT ignored, as a background job of a non-interactive shell starts it: the matrix sets
        # its own handler, whatever the caller's disposition
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            logs = glob.glob(f"{out}/jobs/*/job.log")
            if len(logs) == 2 and all("[6/7]" in Path(p).read_text() for p in logs):  # both jobs inferring
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        if how == "group-sigint":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == line
    for log in glob.glob(f"{out}/jobs/*/job.log"):
        assert Path(log).read_text().strip().splitlines()[-1] == "error: terminated (SIGTERM); no result written"
    assert not (out / "matrix.json").exists() and not (out / "report.md").exists()
    assert not glob.glob(f"{out}/jobs/*/*/*.json")
    running = [p for p in Path("/proc").glob("[0-9]*") if str(out) in _cmdline(p)]
    assert not running, "a job's process outlived the matrix"


def _cmdline(proc_dir: Path) -> str:
    try:
        return proc_dir.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@needs_run
def test_matrix_joins_a_two_node_cluster(tmp_path):
    """--cluster HOST:PORT: a real two-node cluster started on this machine (`ray start`, its token
    sent by the driver); the job runs there and its record comes back to the host."""
    from tests.raynodes import RayNodes
    ray_cli = str(Path(sys.executable).with_name("ray"))
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps([{"model": "unetpp", "runtime": "onnxruntime", "precision": "fp32", "batch_sizes": [1]}]))
    out = tmp_path / "matrix"
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    with RayNodes(ray_cli, [{"cpus": 1}, {"cpus": 1}]) as nodes:
        proc = subprocess.run([sys.executable, "-m", "invoke", "matrix", "--file", str(spec), *FAST, "--out", str(out),
                               "--cluster", nodes.address, "--cpus-per-job", "1"], cwd=ROOT, capture_output=True,
                              text=True, timeout=600, env={**env, "ZOO_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"on the Ray cluster at {nodes.address} (2 CPUs, 2 node(s))" in proc.stdout
    row = json.loads((out / "matrix.json").read_text())["jobs"][0]
    assert row["status"] == "ok" and load_result(out / row["result"])["provenance"]["dataset"]["num_samples"] == 4
