"""The matrix of jobs (`invoke matrix`, issue 15): models x runtimes x precisions x batch sizes, each
job a Ray task in its model's own environment (or image), the results gathered, validated and
reported on the host.

The matrix is data, derived and never written by hand: a model's manifest declares the precisions
it has a verify tolerance for (`verify.tolerance`) and the batch sizes it benchmarks
(`benchmark.batch_sizes`); the runtime registry (zoo.runtimes, which the host imports without
numpy or the engines) says which precisions each runtime runs, on which device, and which Ray
resource a job of it takes (`precisions`, `device_type`, `accelerator`): `runtime_table()` reads
it, a ZOO_RUNTIME_PLUGINS runtime included. A runtime whose device this machine lacks is left out
of the derived matrix; named with --runtimes it stays in and its jobs fail (listed, with the
reason) without being sent to a cluster that could never place them.
`--file` replaces the derivation: a list of jobs, or filters of the derived matrix.

Each job runs `python -m zoo run` in its model's environment as a Ray task: through Ray's
runtime_env `py_executable` (the task itself runs on the model's python) when the environment has
the driver's Ray version, else a task on the host's python starts the model's python; with
--docker, `invoke run --docker` (the model's image). Ray is the scheduler (CPU slots, `GPU`,
`NPU` resources); nothing here schedules. Ray is imported only by `run_matrix`: the rest of this
module (and tasks.py) works without it. Each job writes into its own folder; the task returns the
result JSONs' text, so the host gathers them from whatever node ran the job, validates them
against schema/ and writes one report (runner/report.py) with the matrix's summary beside it.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from runner import ROOT
from zoo.runtimes import PRECISIONS

DEVICE_FILES = {"cuda": "nvidia[0-9]*", "npu": "davinci[0-9]*"}  # /dev entries that show the device
JOB_FIELDS = ("model", "runtime", "precision", "batch_sizes", "args", "name")
FILTER_FIELDS = ("models", "runtimes", "precisions", "batch_sizes")
# the words a job's own fields give; a job's args must not give them again, in full or abbreviated
OWN_FLAGS = ("--model", "--runtime", "--backend", "--precision", "--batch-sizes", "--out")
NAME = re.compile(r"[A-Za-z0-9_.-]+")
LOG = "job.log"
SUMMARY_KIND = "zoo.matrix"


class MatrixError(Exception):
    """A one-line failure of building or running the matrix (bad file, unknown name, no cluster)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def _registry() -> dict:
    """zoo.runtimes.registry(): the runtime classes by name (a plug-in's problem a MatrixError)."""
    from zoo.errors import ZooError
    from zoo.runtimes import registry
    try:
        return registry()
    except ZooError as exc:
        raise MatrixError(str(exc)) from None


def runtime_table() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (device, precisions it runs) of every runtime of the registry, in its order."""
    return {name: (cls.device_type, tuple(cls.precisions)) for name, cls in _registry().items()}


def resources(runtime: str) -> dict[str, int]:
    """The Ray resources one job of `runtime` takes beside its CPU slots: a unit of its accelerator
    (GPU, NPU; Ray makes the granted device the only visible one: CUDA_VISIBLE_DEVICES,
    ASCEND_RT_VISIBLE_DEVICES), none for a CPU runtime."""
    accelerator = _registry()[runtime].accelerator
    return {accelerator: 1} if accelerator else {}


class Interrupted(MatrixError):
    """Ctrl-C (130) or SIGTERM (143) while the jobs ran: outstanding jobs cancelled, no report."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Job:
    """One cell of the matrix: `python -m zoo run` of a model on a runtime at a precision over
    batch sizes, with extra run arguments (`args`); `name` tells apart jobs of the same cell."""
    model: str
    runtime: str
    precision: str
    batch_sizes: tuple[int, ...]
    args: tuple[str, ...] = ()
    name: str = ""

    @property
    def id(self) -> str:
        return "/".join(filter(None, (self.model, self.runtime, self.precision, self.name)))

    @property
    def slug(self) -> str:
        """The job's folder name under <out>/jobs."""
        return self.id.replace("/", "-")

    @property
    def device(self) -> str:
        return runtime_table()[self.runtime][0]

    def to_dict(self) -> dict:
        return {"id": self.id, "model": self.model, "runtime": self.runtime, "precision": self.precision,
                "batch_sizes": list(self.batch_sizes), "args": list(self.args), "name": self.name}


# ---------------------------------------------------------------- the matrix as data

def local_devices(dev: Path = Path("/dev")) -> set[str]:
    """The devices this machine has: always the CPU, a GPU or NPU where its /dev entry exists."""
    return {"cpu"} | {d for d, pattern in DEVICE_FILES.items() if any(dev.glob(pattern))}


def model_facts(model: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(precisions with a verify tolerance, benchmark batch sizes) of a model's manifest."""
    from zoo.errors import ZooError
    from zoo.manifest import load_manifest
    try:
        m = load_manifest(model)
    except ZooError as exc:
        raise MatrixError(str(exc)) from None
    declared = tuple(p for p in PRECISIONS if p in (m.verify.get("tolerance") or {}))
    return declared, tuple(m.benchmark["batch_sizes"])


def known_models() -> list[str]:
    from zoo.registry import names
    return names()


def _names(given, known, what: str, origin: str = "") -> list[str] | None:
    """A filter: comma-separated text or a list of names, each one of `known`; None when not given."""
    if given is None:
        return None
    names = [n.strip() for n in given.split(",")] if isinstance(given, str) else given
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise MatrixError(f"{origin}{what}: expected a non-empty list of names, got {given!r}")
    if not all(names):  # "--models ," or "unetpp,": a name left out by mistake, never ignored
        raise MatrixError(f"{origin}{what}: an empty name in {given!r}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise MatrixError(f"{origin}unknown {what[:-1] if what.endswith('s') else what} {unknown[0]!r} "
                          f"(known: {', '.join(known)})")
    return names


def _sizes(given, origin: str = "") -> tuple[int, ...] | None:
    """Batch sizes: "1,4" or [1, 4], positive integers; None when not given."""
    if given is None:
        return None
    try:
        sizes = [int(t) for t in given.split(",") if t.strip()] if isinstance(given, str) else given
    except ValueError:
        sizes = None
    if (not isinstance(sizes, list) or not sizes
            or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in sizes)):
        raise MatrixError(f"{origin}batch_sizes: expected positive integers, got {given!r}")
    return tuple(sizes)


def derive(models=None, runtimes=None, precisions=None, batch_sizes=None, devices: set[str] | None = None,
           origin: str = "") -> list[Job]:
    """The matrix from the manifests: every model x every runtime (default: those whose device is in
    `devices`) x every precision the model declares a tolerance for and the runtime runs, over the
    manifest's batch sizes (or `batch_sizes`). Filters are names (or comma-separated text)."""
    devices = local_devices() if devices is None else devices
    models = _names(models, known_models(), "models", origin) or known_models()
    table = runtime_table()
    named = _names(runtimes, list(table), "runtimes", origin)
    runtimes = named or [r for r, (device, _) in table.items() if device in devices]
    wanted = _names(precisions, list(PRECISIONS), "precisions", origin)
    sizes = _sizes(batch_sizes, origin)
    jobs = []
    for model in models:
        declared, manifest_sizes = model_facts(model)
        for runtime in runtimes:
            for precision in declared:
                if precision in table[runtime][1] and (wanted is None or precision in wanted):
                    jobs.append(Job(model, runtime, precision, sizes or manifest_sizes))
    return jobs


def select(jobs: list[Job], models=None, runtimes=None, precisions=None, batch_sizes=None) -> list[Job]:
    """The jobs of the given models / runtimes / precisions (filters on a file's jobs); batch_sizes
    replaces every job's."""
    models = _names(models, known_models(), "models")
    runtimes = _names(runtimes, list(runtime_table()), "runtimes")
    precisions = _names(precisions, list(PRECISIONS), "precisions")
    sizes = _sizes(batch_sizes)
    return [Job(j.model, j.runtime, j.precision, sizes or j.batch_sizes, j.args, j.name) for j in jobs
            if (models is None or j.model in models) and (runtimes is None or j.runtime in runtimes)
            and (precisions is None or j.precision in precisions)]


def _own_flag(word: str) -> str | None:
    """The job's own flag `word` gives (OWN_FLAGS), also by a prefix: argparse takes `--runt` for
    --runtime and `--ou DIR` for --out (a job run under another label, or written outside the
    matrix folder); None for any other word."""
    flag = word.split("=", 1)[0]
    if not flag.startswith("--") or len(flag) < 3:
        return None
    return next((own for own in OWN_FLAGS if own.startswith(flag)), None)


def _file_job(entry, index: int, origin: str) -> Job:
    """One job of a matrix file: {model, runtime, precision (fp32), batch_sizes (the manifest's),
    args ([]), name ("")}."""
    where = f"{origin}job {index}: "
    if not isinstance(entry, dict):
        raise MatrixError(f"{where}expected an object with {', '.join(JOB_FIELDS)}, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(JOB_FIELDS))
    if unknown:
        raise MatrixError(f"{where}unknown field {unknown[0]!r} (fields: {', '.join(JOB_FIELDS)})")
    for key in ("model", "runtime"):
        if key not in entry:
            raise MatrixError(f"{where}missing {key!r}")
    model = _names([entry["model"]] if isinstance(entry["model"], str) else entry["model"], known_models(),
                   "model", where)[0]
    runtime = _names([entry["runtime"]] if isinstance(entry["runtime"], str) else entry["runtime"],
                     list(runtime_table()), "runtime", where)[0]
    precision = entry.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise MatrixError(f"{where}precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    args = entry.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise MatrixError(f"{where}args: expected a list of strings (zoo run arguments), got {args!r}")
    own = [(a, flag) for a in args for flag in [_own_flag(a)] if flag]
    if own:
        word, flag = own[0]
        same = "" if word.split("=", 1)[0] == flag else f" (a prefix of {flag}, which argparse would take for it)"
        raise MatrixError(f"{where}args: {word}{same} is given by the job's own fields, not by its args")
    name = entry.get("name", "")
    if not isinstance(name, str) or (name and not NAME.fullmatch(name)):
        raise MatrixError(f"{where}name: letters, digits, '_', '.' and '-' only, got {name!r}")
    sizes = _sizes(entry.get("batch_sizes"), where) or model_facts(model)[1]
    return Job(model, runtime, precision, sizes, tuple(args), name)


def load_file(path: Path, devices: set[str] | None = None) -> list[Job]:
    """The jobs of a matrix file (JSON): a list of jobs, or an object of filters of the derived matrix
    ({models, runtimes, precisions, batch_sizes}). Any problem is one line naming the file."""
    path = Path(path)
    origin = f"{path}: "
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise MatrixError(f"{path}: no such matrix file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MatrixError(f"{path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise MatrixError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise MatrixError(f"{path}: nested too deeply to be a matrix file") from None
    if isinstance(data, dict):
        unknown = sorted(set(data) - set(FILTER_FIELDS))
        if unknown:
            raise MatrixError(f"{path}: unknown filter {unknown[0]!r} (filters: {', '.join(FILTER_FIELDS)}; "
                              f"a list of jobs is a JSON array)")
        for key, value in data.items():
            if not isinstance(value, list):
                raise MatrixError(f"{path}: {key}: expected a list, got {value!r}")
        return derive(devices=devices, origin=origin, **data)
    if not isinstance(data, list) or not data:
        raise MatrixError(f"{path}: expected a non-empty list of jobs or an object of filters, "
                          f"got {type(data).__name__ if data != [] else 'an empty list'}")
    jobs = [_file_job(entry, i, origin) for i, entry in enumerate(data)]
    seen = set()
    for job in jobs:
        if job.id in seen:
            raise MatrixError(f"{path}: job {job.id!r} is given twice (tell them apart with \"name\")")
        seen.add(job.id)
    return jobs


def plan(models=None, runtimes=None, precisions=None, batch_sizes=None, file=None,
         devices: set[str] | None = None) -> list[Job]:
    """The matrix `invoke matrix` runs: derived (filtered by the flags), or a file's (filtered by them)."""
    if file is not None:
        jobs = select(load_file(Path(file), devices), models, runtimes, precisions, batch_sizes)
    else:
        jobs = derive(models, runtimes, precisions, batch_sizes, devices)
    if not jobs:
        raise MatrixError("the matrix is empty: no model declares a tolerance for the selected precisions "
                          "that the selected runtimes run")
    return jobs


def describe(jobs: list[Job]) -> list[str]:
    """The matrix as printed: one line per job."""
    width = max(len(j.id) for j in jobs)
    lines = [f"matrix: {len(jobs)} job(s)"]
    for j in jobs:
        extra = f"  {' '.join(j.args)}" if j.args else ""
        lines.append(f"  {j.id:<{width}}  batch sizes {','.join(map(str, j.batch_sizes))}{extra}")
    return lines


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
