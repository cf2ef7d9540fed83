"""The matrix as data (`invoke matrix`, runner/matrix.py's part): the table of jobs, pure (no Ray,
no environment, nothing run).

The matrix is data, derived and never written by hand: a model's manifest declares the precisions
it has a verify tolerance for (`verify.tolerance`) and the batch sizes it benchmarks
(`benchmark.batch_sizes`); the runtime registry (zoo.runtimes, which the host imports without
numpy or the engines) says which precisions each runtime runs, on which device, and which Ray
resource a job of it takes (`precisions`, `device_type`, `accelerator`): `runtime_table()` reads
it, a ZOO_RUNTIME_PLUGINS runtime included. A runtime whose device this machine lacks is left out
of the derived matrix; named with --runtimes it stays in and its jobs fail (listed, with the
reason) without being sent to a cluster that could never place them.
`--file` replaces the derivation: a list of jobs, or filters of the derived matrix.

`plan()` is the matrix `invoke matrix` runs and `describe()` its printed lines; a `Job` is one cell.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from zoo.runtimes import PRECISIONS

DEVICE_FILES = {"cuda": "nvidia[0-9]*", "npu": "davinci[0-9]*"}  # /dev entries that show the device
JOB_FIELDS = ("model", "runtime", "precision", "batch_sizes", "args", "name")
FILTER_FIELDS = ("models", "runtimes", "precisions", "batch_sizes")
# the words a job's own fields give; a job's args must not give them again, in full or abbreviated
OWN_FLAGS = ("--model", "--runtime", "--backend", "--precision", "--batch-sizes", "--out")
NAME = re.compile(r"[A-Za-z0-9_.-]+")


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
