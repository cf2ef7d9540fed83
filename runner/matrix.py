"""The matrix of jobs (`invoke matrix`, issue 15): models x runtimes x precisions x batch sizes, each
job a Ray task in its model's own environment (or image), the results gathered, validated and
reported on the host.

Each job runs `python -m zoo run` in its model's environment as a Ray task: through Ray's
runtime_env `py_executable` (the task itself runs on the model's python) when the environment has
the driver's Ray version, else a task on the host's python starts the model's python; with
--docker, `invoke run --docker` (the model's image). Ray is the scheduler (CPU slots, `GPU`,
`NPU` resources); nothing here schedules. Ray is imported only by `run_matrix`: the rest of this
module (and tasks.py) works without it. Each job writes into its own folder; the task returns the
result JSONs' text, so the host gathers them from whatever node ran the job, validates them
against schema/ and writes one report (runner/report.py) with the matrix's summary beside it.

The matrix as data (the jobs, from the manifests or --file: `plan`, `derive`, `load_file`, `Job`,
`MatrixError`) is runner/matrix_plan.py; this module re-exports it and runs the jobs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from runner import ROOT
from runner.matrix_plan import (  # noqa: F401 -- the matrix as data, used through runner.matrix (tasks.py, tests)
    DEVICE_FILES,
    FILTER_FIELDS,
    JOB_FIELDS,
    NAME,
    OWN_FLAGS,
    Job,
    MatrixError,
    derive,
    describe,
    known_models,
    load_file,
    local_devices,
    model_facts,
    plan,
    resources,
    runtime_table,
    select,
)
from zoo.runtimes import PRECISIONS  # noqa: F401 -- runner.matrix.PRECISIONS, as before the split

LOG = "job.log"
SUMMARY_KIND = "zoo.matrix"


class Interrupted(MatrixError):
    """Ctrl-C (130) or SIGTERM (143) while the jobs ran: outstanding jobs cancelled, no report."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- one job's command

def env_has_ray(model: str) -> bool:
    """The model's environment has the driver's Ray (its version's dist-info): only then can a Ray
    worker run on its python (runtime_env py_executable)."""
    from runner.envs import env_dir
    try:
        import importlib.metadata
        version = importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return False
    return any(env_dir(model).glob(f"lib/python*/site-packages/ray-{version}.dist-info"))


def job_spec(job: Job, out: Path, common: list[str], docker: bool = False,
             calibration: dict[str, list[str]] | None = None) -> dict:
    """What the job's task runs: `mode` (env: a worker on the model's python; host: a host worker
    that starts the model's python; docker: `invoke run --docker`), `python` (None: the worker's
    own), `argv`, its folder `dir`, and the Ray `runtime_env`. `common`: the run arguments every
    job gets (--limit, --threads, --data, ...), then the job's own args. `calibration`: the
    calibration options' words by field (--calib-size ...), given only to the jobs that read them
    (an int8 job; a run that does not calibrate refuses them)."""
    from runner.envs import env_python
    from zoo.stages.config import reads_calibration
    folder = Path(out).resolve() / "jobs" / job.slug
    calib = [w for field, ws in (calibration or {}).items() if reads_calibration(job.runtime, job.precision, field)
             for w in ws]
    words = ["--model", job.model, "--runtime", job.runtime, "--precision", job.precision,
             "--batch-sizes", ",".join(map(str, job.batch_sizes)), "--out", str(folder), *common, *calib, *job.args]
    env_vars = {"PYTHONPATH": str(ROOT)}
    if docker:
        return {"mode": "docker", "python": None, "argv": ["-m", "invoke", "run", "--docker", *words],
                "dir": str(folder), "runtime_env": {"env_vars": env_vars}}
    python = env_python(job.model)
    if env_has_ray(job.model):
        return {"mode": "env", "python": None, "argv": ["-m", "zoo", "run", *words], "dir": str(folder),
                "runtime_env": {"py_executable": str(python), "env_vars": env_vars}}
    return {"mode": "host", "python": str(python), "argv": ["-m", "zoo", "run", *words], "dir": str(folder),
            "runtime_env": {"env_vars": env_vars}}


def command_line(spec: dict) -> str:
    python = spec["python"] or (spec["runtime_env"].get("py_executable") or "python3")
    return " ".join([python, *spec["argv"]])


# ---------------------------------------------------------------- the task (runs on a Ray worker)

def _error_line(log: Path, code: int) -> str | None:
    """The job's one-line error: the last `error: ...` line of its output (the zoo's), else its
    last line; None when it succeeded."""
    if code == 0:
        return None
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    errors = [ln for ln in lines if ln.startswith("error:")]
    reason = (errors or lines or [""])[-1].removeprefix("error:").strip()
    how = _killed(-code) if code < 0 else f"exit {code}"
    return (f"{how}: {reason}" if reason else how)[:300]


def _killed(signum: int) -> str:
    """`killed by SIGKILL (out of memory?)`: a job's death by a signal, named."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    return f"killed by {name}" + (" (out of memory?)" if signum == signal.SIGKILL else "")


def _result_texts(folder: Path) -> dict[str, str]:
    """Every zoo result JSON the job wrote (by its `kind`), relative path -> text."""
    out = {}
    for p in sorted(folder.rglob("*.json")):
        try:
            text = p.read_text()
            if json.loads(text).get("kind") == "zoo.result":
                out[str(p.relative_to(folder))] = text
        except (OSError, ValueError, AttributeError, RecursionError):
            continue
    return out


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the job's process (the zoo stops with one line, nothing written), then wait."""
    try:
        proc.terminate()
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except ProcessLookupError:
        pass


def run_job(spec: dict) -> dict:
    """The body of one job's Ray task: run the job's command in its folder (output into job.log),
    wait, and return the outcome with its result JSONs' text. A cancel (KeyboardInterrupt in the
    task) stops the command first; the command also stops if this worker dies (ZOO_PARENT_PID)."""
    import socket
    if threading.current_thread() is threading.main_thread():  # a worker born with SIGINT ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # ray.cancel must still interrupt it
    folder = Path(spec["dir"])
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    env = {**os.environ, "ZOO_PARENT_PID": str(os.getpid())}
    with open(folder / LOG, "wb") as log:
        proc = subprocess.Popen([spec["python"] or sys.executable, *spec["argv"]], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            while True:  # polled: a cancel's KeyboardInterrupt is raised between the waits
                try:
                    code = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        except BaseException:
            _stop(proc)
            raise
    return {"exit_code": code, "error": _error_line(folder / LOG, code), "wall_s": time.monotonic() - started,
            "results": _result_texts(folder), "node": socket.gethostname(), "python": sys.executable}


# ---------------------------------------------------------------- the host: cluster, jobs, gathering

class _Terminated(KeyboardInterrupt):
    """SIGTERM while the jobs run: stopped like Ctrl-C, exit 143."""


_signalled: list[int] = []  # SIGTERM's mark: Ray's wait turns any exception of a handler into KeyboardInterrupt


def _on_sigterm(signum, frame):
    _signalled.append(signum)
    raise _Terminated()


def cores() -> int:
    return len(os.sched_getaffinity(0))


def default_cpus_per_job() -> int:
    """Half this machine's cores, at least 1: two jobs at a time, each on its own cores."""
    return max(1, cores() // 2)


def cluster_address(cluster: str | None) -> str:
    """Ray's address: "local" (a cluster started here, stopped at the end), "auto" (the running
    one), ray://HOST:PORT or HOST:PORT; None: RAY_ADDRESS when set, else local."""
    from zoo.shard import cluster_problem
    what = "--cluster" if cluster is not None else "RAY_ADDRESS"
    if cluster is None:
        cluster = os.environ.get("RAY_ADDRESS") or "local"
    problem = cluster_problem(cluster, what) or (cluster_problem(os.environ.get("RAY_ADDRESS"), "RAY_ADDRESS")
                                                 if cluster == "auto" else None)
    if problem:  # before Ray is imported: it would import the module named before any other "scheme://"
        raise MatrixError(problem)
    return cluster


def _connect(ray, address: str) -> str:
    """Start (local) or join the cluster, without the dashboard; its description for the log."""
    import logging
    kw = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address == "local":
        kw.update(address="local", num_cpus=cores(), include_dashboard=False)
    else:
        kw.update(address=address)
    try:
        if address == "local":
            ray.init(**kw)
        else:
            from zoo.shard import join  # again when Ray Client's per-driver server failed to start
            join(ray, address, **kw)
    except Exception as exc:  # ConnectionError, ValueError, RuntimeError: Ray's own words, on one line
        raise MatrixError(f"--cluster {address}: cannot {'start' if address == 'local' else 'join'} "
                          f"the Ray cluster ({' '.join(str(exc).split())[:300]})") from None
    res = ray.cluster_resources()
    devices = "".join(f", {res[k]:g} {k}" for k in ("GPU", "NPU") if res.get(k))
    where = "a local Ray cluster" if address == "local" else f"the Ray cluster at {address}"
    return f"{where} ({res.get('CPU', 0):g} CPUs{devices}, {len(ray.nodes())} node(s))"


def _unplaceable(ray, demand: dict) -> str | None:
    """Why no live node of the cluster could ever run a job needing `demand` (None: one can)."""
    for node in ray.nodes():
        if node.get("Alive") and all(node.get("Resources", {}).get(k, 0) >= v for k, v in demand.items()):
            return None
    need = ", ".join(f"{v:g} {k}" for k, v in demand.items())
    return f"no node of the cluster has {need} (Ray resources)"


def _unrunnable(spec: dict) -> str | None:
    """Why a job cannot start here (its model environment is missing)."""
    if spec["mode"] == "docker":
        return None
    python = Path(spec["python"] or spec["runtime_env"]["py_executable"])
    if not python.exists():
        model = python.parent.parent.name
        return f"no environment {python.parent.parent} (make it: invoke setup --model {model}, or --setup-envs)"
    return None


def _best(record: dict) -> dict | None:
    """The record's best infer-only throughput: {samples_per_s, batch_size}."""
    ok = [p for p in record.get("perf", []) if p.get("status") == "ok" and p.get("scope") == "infer_only"]
    if not ok:
        return None
    best = max(ok, key=lambda p: p["throughput"])
    return {"samples_per_s": best["throughput"], "batch_size": best["batch_size"]}


def _inside(folder: Path, rel: str) -> Path:
    path = (folder / rel).resolve()
    if folder.resolve() not in path.parents:
        raise MatrixError(f"{folder}: a job returned a result path outside its folder: {rel!r}")
    return path


def gather(job: Job, spec: dict, outcome: dict, out: Path) -> dict:
    """The job's row of the summary: its result JSONs written on the host (atomically; unchanged
    when the job ran here), each validated against the schema (an invalid one is renamed
    *.json.invalid, so that the report reads only valid ones); ok = exit 0 and a valid result."""
    from runner.validate import ResultError, load_result
    from zoo.fileutil import atomic_write_text
    folder = Path(spec["dir"])
    results, problem, best = [], None, None
    for rel, text in sorted(outcome.get("results", {}).items()):
        path = _inside(folder, rel)
        if not path.is_file() or path.read_text(errors="replace") != text:
            atomic_write_text(path, text)
        try:
            best = _best(load_result(path)) or best
            results.append(path)
        except ResultError as exc:
            problem = f"result not valid: {exc}"
            os.replace(path, path.with_name(path.name + ".invalid"))
    code = outcome.get("exit_code")
    error = outcome.get("error") or problem or (None if results else "finished without a result JSON")
    ok = code == 0 and results and problem is None
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    return {**job.to_dict(), "status": "ok" if ok else "failed", "exit_code": code, "error": None if ok else error,
            "result": rel(results[-1]) if results else None, "results": [rel(p) for p in results],
            "wall_s": round(outcome.get("wall_s", 0.0), 3), "best": best if ok else None,
            "node": outcome.get("node"), "worker_python": outcome.get("python"), "mode": spec["mode"],
            "command": command_line(spec), "log": rel(folder / LOG) if (folder / LOG).exists() else None}


def _failed_row(job: Job, spec: dict, error: str) -> dict:
    """The row of a job that failed without an outcome (not run, or its Ray task failed)."""
    return {**job.to_dict(), "status": "failed", "exit_code": None, "error": " ".join(error.split())[:300],
            "result": None, "results": [], "wall_s": 0.0, "best": None, "node": None,
            "worker_python": None, "mode": spec["mode"], "command": command_line(spec), "log": None}


def progress_line(done: int, total: int, failed: int, row: dict) -> str:
    """`matrix: 3/8 jobs done (1 failed), last: unetpp/openvino/fp32 ok 41 s, 120.3 samples/s (bs 4)`."""
    tail = f"{row['status']} {row['wall_s']:.0f} s"
    if row["best"]:
        tail += f", {row['best']['samples_per_s']:.1f} samples/s (bs {row['best']['batch_size']})"
    if row["error"]:
        tail += f": {row['error']}"
    return f"matrix: {done}/{total} jobs done ({failed} failed), last: {row['id']} {tail}"


def run_jobs(jobs: list[Job], specs: dict[str, dict], out: Path, address: str, cpus_per_job: int,
             log=print) -> tuple[list[dict], str]:
    """Every job as a Ray task (CPU slots, GPU/NPU resource, its runtime_env; not retried), the rows
    as they finish, a progress line each. Ctrl-C or SIGTERM: the outstanding tasks cancelled (their
    commands stopped), Ray shut down, Interrupted (130/143)."""
    if address != "local":
        from zoo.errors import ZooError
        from zoo.shard import check_reachable, use_cluster_token
        try:  # nothing listening: one line now, not Ray's retries for minutes; Ray's join bounded
            check_reachable(address if address != "auto" else os.environ.get("RAY_ADDRESS", ""))
        except ZooError as exc:
            raise MatrixError(str(exc)) from None
        use_cluster_token()  # before Ray reads its configuration: the token `ray start` wrote
    try:
        import ray
    except ImportError:
        raise MatrixError("invoke matrix runs its jobs as Ray tasks and Ray is not installed on the host: "
                          "python3 -m pip install -r requirements-cluster.txt") from None
    from ray.exceptions import RayError
    main = threading.current_thread() is threading.main_thread()
    # Ctrl-C explicitly, before Ray starts its processes: invoke started from a background job
    # inherits SIGINT ignored, and so would a local cluster's workers, where ray.cancel (which
    # interrupts the task's main thread as SIGINT would) then does nothing
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
    try:
        where = _connect(ray, address)
    except BaseException:
        if main:
            signal.signal(signal.SIGINT, previous_int if previous_int is not None else signal.SIG_DFL)
        raise
    log(f"matrix: {len(jobs)} job(s) on {where}, {cpus_per_job} CPU(s) per job")
    _signalled.clear()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main else None
    rows, pending, by_id = {}, {}, {j.id: j for j in jobs}
    from zoo import logs
    bar = logs.start("matrix", len(jobs), "jobs")  # a bar with the ETA on a terminal; closed in `finally`

    def finish(row: dict) -> None:
        rows[row["id"]] = row
        failed = sum(r["status"] != "ok" for r in rows.values())
        log(progress_line(len(rows), len(jobs), failed, row))
        bar.update(len(rows), description=f"matrix ({failed} failed)" if failed else None)

    try:
        task = ray.remote(run_job)
        for job in jobs:
            spec = specs[job.id]
            demand = {"CPU": cpus_per_job, **resources(job.runtime)}
            reason = _unrunnable(spec) or _unplaceable(ray, demand)
            if reason:
                finish(_failed_row(job, spec, f"not run: {reason}"))
                continue
            extra = {k: v for k, v in demand.items() if k not in ("CPU", "GPU")}
            ref = task.options(num_cpus=cpus_per_job, num_gpus=demand.get("GPU", 0), resources=extra or None,
                               runtime_env=spec["runtime_env"], max_retries=0, name=f"matrix:{job.id}").remote(spec)
            pending[ref] = job.id
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)  # a timeout: signals are handled between
            if not ready:
                continue
            job = by_id[pending.pop(ready[0])]
            try:
                finish(gather(job, specs[job.id], ray.get(ready[0]), out))
            except RayError as exc:  # the worker died, its runtime_env could not be set up, ...
                finish(_failed_row(job, specs[job.id], f"Ray: {type(exc).__name__}: {exc}"))
    except KeyboardInterrupt as exc:
        term = isinstance(exc, _Terminated) or signal.SIGTERM in _signalled
        code, what = (143, "terminated (SIGTERM)") if term else (130, "interrupted")
        try:
            for ref in pending:
                ray.cancel(ref)  # KeyboardInterrupt in the task: it stops its command (one line, no result)
            if pending:
                ray.wait(list(pending), num_returns=len(pending), timeout=30)
        except Exception:  # noqa: BLE001 -- a terminal's Ctrl-C may have stopped the cluster's processes too
            pass
        raise Interrupted(f"{what}: {len(pending)} job(s) cancelled, {len(rows)} finished; no report written",
                          code) from None
    finally:
        bar.close()
        ray.shutdown()
        if main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            signal.signal(signal.SIGINT, previous_int if previous_int is not None else signal.SIG_DFL)
    return [rows[j.id] for j in jobs], where


def to_markdown(summary: dict) -> str:
    """The matrix summary as Markdown: totals, then one row per job."""
    lines = [f"# Matrix {summary['created']}", "",
             f"{summary['ok']} ok, {summary['failed']} failed of {len(summary['jobs'])} jobs on {summary['cluster']}; "
             f"{summary['cpus_per_job']} CPU(s) per job; wall {summary['wall_s']:.0f} s."
             + (f" Report: {summary['report']['markdown']}" if summary.get("report") else "")
             + (f" No report: {summary['report_error']}" if summary.get("report_error") else ""), "",
             "| job | batch sizes | status | exit | wall s | best samples/s (bs) | result | error |",
             "| --- | --- | --- | --- | ---: | ---: | --- | --- |"]
    for r in summary["jobs"]:
        best = f"{r['best']['samples_per_s']:.1f} ({r['best']['batch_size']})" if r["best"] else "—"
        cells = [r["id"], ",".join(map(str, r["batch_sizes"])), r["status"],
                 "—" if r["exit_code"] is None else str(r["exit_code"]), f"{r['wall_s']:.1f}", best,
                 r["result"] or "—", (r["error"] or "").replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def check_out(out: Path) -> None:
    """A matrix folder is new: never mixed with an earlier matrix's jobs (its report would be too)."""
    if (out / "matrix.json").exists() or any((out / "jobs").glob("*")):
        raise MatrixError(f"{out}: already holds a matrix (matrix.json, jobs/); choose another --out")


def run_matrix(jobs: list[Job], out: Path, common: list[str], cluster: str | None = None,
               cpus_per_job: int | None = None, docker: bool = False, log=print,
               calibration: dict[str, list[str]] | None = None) -> dict:
    """Run the matrix and write, into `out`: jobs/<job>/ (each job's results and job.log),
    matrix.json and matrix.md (the summary), report.md/report.html (runner/report.py, over every
    valid result). Returns the summary."""
    from runner.report import write_report
    from runner.validate import ResultError
    from zoo.fileutil import atomic_write_text
    out = Path(out).resolve()
    check_out(out)
    address = cluster_address(cluster)
    cpus = cpus_per_job or default_cpus_per_job()
    specs = {job.id: job_spec(job, out, common, docker, calibration) for job in jobs}
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    started = time.monotonic()
    rows, where = run_jobs(jobs, specs, out, address, cpus, log)
    summary = {"kind": SUMMARY_KIND, "created": created, "cluster": where, "address": address,
               "cpus_per_job": cpus, "docker": docker, "common_args": common,
               "calibration_args": [w for ws in (calibration or {}).values() for w in ws],
               "wall_s": round(time.monotonic() - started, 3),
               "ok": sum(r["status"] == "ok" for r in rows), "failed": sum(r["status"] != "ok" for r in rows),
               "jobs": rows, "report": None, "report_error": None}
    if summary["ok"]:
        try:
            paths = write_report(out / "jobs", out)
            summary["report"] = {k: os.path.relpath(paths[k], out) for k in ("markdown", "html")}
        except ResultError as exc:
            summary["report_error"] = str(exc)
    else:
        summary["report_error"] = "no job produced a valid result"
    atomic_write_text(out / "matrix.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "matrix.md", to_markdown(summary))
    return summary
