"""Docker side of the meta-runner: build a model's image and run it like the local run.

Generic over models: a model ``<name>`` has an image when ``models/<name>/Dockerfile``
exists (build context = the repo root, default tag ``zoo/<name>:latest``). The image's
entrypoint is the local one, ``python -m zoo``, so a container run is
``python -m zoo run --model <name> ...`` with host folders mounted at fixed places:

    /data     the data folder, read-only            (only when ``data`` is given: ``--data /data``)
    /weights  the weights file's folder, read-only  (only when ``weights`` is a file:
                                                     ``--weights /weights/<file>``; a URL
                                                     or a checkpoint name is passed as is)
    /results  the results folder, read-write        (``--out /results``)
    /cache    the cache folder, read-write          (``ZOO_CACHE=/cache`` in the image)

Without ``data``/``weights`` nothing is mounted for them: the image has its built-in data
and checkpoint. The container runs as the caller's ``uid:gid`` so the result files belong
to the caller, with the accelerators found on the host (see ``discover_devices``).

API (for tasks.py)
------------------
``plan_build(model, tag=None, git_commit=None) -> list[str]``
    argv of ``docker build`` (for ``--dry-run``).
``plan_run(model, *, out, cache, data=None, weights=None, tag=None, device_type="auto",
zoo_args=(), user=None, dev_root="/dev", driver_dir=ASCEND_DRIVER_DIR,
npu_smi=NPU_SMI) -> list[str]``
    argv of ``docker run --rm ...`` (for ``--dry-run``).
``format_command(argv) -> str``
    one shell-quoted line (``shlex.join``).
``build(model, tag=None, git_commit=None, *, log=print_line) -> str``
    builds with the Docker SDK, streaming the build log lines to ``log``; returns the image id.
``run(model, *, <the keywords of plan_run>, log=print_line) -> int``
    runs with the Docker SDK (same mounts, devices, user), streaming the container's
    output lines to ``log``; returns the container's exit code.
``discover_devices(device_type="auto", *, dev_root="/dev", driver_dir=ASCEND_DRIVER_DIR,
npu_smi=NPU_SMI) -> Devices``
    the accelerators to pass to the container; ``DEVICE_TYPES`` lists the choices.

Errors are ``DockerError`` subclasses with one-line messages, fit for ``sys.exit(str(err))``:
``UnknownModel`` (no ``models/<name>/Dockerfile``), ``DeviceNotFound`` (explicit
``ascend``/``nvidia`` without such a device), ``DockerUnavailable`` (no daemon reachable, or
the SDK missing). ``plan_*`` need neither the SDK nor a daemon.

The SDK talks to ``DOCKER_HOST`` (default ``unix:///var/run/docker.sock``); it does not
follow the docker CLI's contexts.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from runner import MODELS_DIR, ROOT

__all__ = [
    "ASCEND_DRIVER_DIR",
    "DEVICE_TYPES",
    "NPU_SMI",
    "Devices",
    "DeviceNotFound",
    "DockerError",
    "DockerUnavailable",
    "Mount",
    "RunSpec",
    "UnknownModel",
    "build",
    "current_git_commit",
    "discover_devices",
    "dockerfile_path",
    "format_command",
    "image_tag",
    "plan_build",
    "plan_run",
    "prepare_run",
    "print_line",
    "run",
]

PathLike = Union[str, "os.PathLike[str]"]

DEVICE_TYPES = ("auto", "cpu", "ascend", "nvidia")
ASCEND_DRIVER_DIR = "/usr/local/Ascend/driver"
NPU_SMI = "/usr/local/sbin/npu-smi"
ASCEND_CONTROL_DEVICES = ("davinci_manager", "devmm_svm", "hisi_hdc")

# Fixed places inside the container.
DATA_DIR = "/data"
WEIGHTS_DIR = "/weights"
RESULTS_DIR = "/results"
CACHE_DIR = "/cache"
# A --user uid may have no passwd entry in the image (HOME would be "/", not writable).
CONTAINER_ENV = (("HOME", "/tmp"),)

_DAVINCI = re.compile(r"davinci(\d+)")
_NVIDIA = re.compile(r"nvidia(\d+)")
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# zoo options whose values are container paths set by plan_run itself.
_RESERVED_ZOO_OPTIONS = ("--model", "--out", "--data", "--weights")
_NO_DAEMON_HINT = "use --dry-run to print the docker commands"


# --------------------------------------------------------------------------- errors


class DockerError(RuntimeError):
    """Base of this module's errors; the message is always a single line."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class UnknownModel(DockerError):
    """The model has no ``models/<name>/Dockerfile``."""


class DeviceNotFound(DockerError):
    """An explicit ``--device-type`` whose devices are not on this host."""


class DockerUnavailable(DockerError):
    """No Docker daemon reachable (or the Docker SDK is not installed)."""


def _one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace (newlines included) and cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --------------------------------------------------------------------------- models, tags, commit


def dockerfile_path(model: str) -> Path:
    """``models/<model>/Dockerfile``; raises UnknownModel if the model has none."""
    if not _MODEL_NAME.fullmatch(model or ""):
        raise UnknownModel(f"invalid model name {model!r}")
    path = MODELS_DIR / model / "Dockerfile"
    if not path.is_file():
        raise UnknownModel(
            f"unknown model {model!r}: no {path.relative_to(ROOT).as_posix()}")
    return path


def image_tag(model: str, tag: str | None = None) -> str:
    """``tag`` if given, else ``zoo/<model>:latest`` (repository names are lower case)."""
    return tag or f"zoo/{model.lower()}:latest"


def current_git_commit(root: Path = ROOT) -> str | None:
    """The checked-out commit of ``root`` (``git rev-parse HEAD``), or None if unknown."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--verify", "-q", "HEAD"],
            capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and commit else None


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class Mount:
    """A bind mount of a host path (absolute) at a container path."""

    source: str
    target: str
    read_only: bool = True

    def cli_args(self) -> list[str]:
        """``-v source:target:ro|rw``."""
        return ["-v", f"{self.source}:{self.target}:{'ro' if self.read_only else 'rw'}"]


@dataclass(frozen=True)
class Devices:
    """Accelerators to hand to a container.

    ``kind`` is ``cpu``, ``ascend`` or ``nvidia``; ``devices`` are (host path, container
    path) pairs for ``--device``; ``mounts`` are read-only host files the devices need (the
    Ascend driver, npu-smi); ``gpus`` asks for all NVIDIA GPUs (``--gpus all``).
    """

    kind: str = "cpu"
    devices: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    gpus: bool = False

    def cli_args(self) -> list[str]:
        """The ``docker run`` options for these devices."""
        args: list[str] = []
        for host, container in self.devices:
            args += ["--device", host if host == container else f"{host}:{container}"]
        for mount in self.mounts:
            args += mount.cli_args()
        if self.gpus:
            args += ["--gpus", "all"]
        return args


def _list_dir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _ascend_devices(dev_root: Path, driver_dir: Path, npu_smi: Path) -> Devices | None:
    """Ascend NPUs under ``dev_root``: ``davinci<N>`` in numeric order, the control devices
    present, the driver folder and npu-smi read-only. None when there is no ``davinci<N>``."""
    numbered = sorted(
        (int(m.group(1)), name)
        for name in _list_dir(dev_root)
        if (m := _DAVINCI.fullmatch(name)))
    if not numbered:
        return None
    names = [name for _, name in numbered]
    names += [name for name in ASCEND_CONTROL_DEVICES if (dev_root / name).exists()]
    devices = tuple((str(dev_root / name), f"/dev/{name}") for name in names)
    mounts = []
    if driver_dir.is_dir():
        mounts.append(Mount(str(driver_dir), ASCEND_DRIVER_DIR, read_only=True))
    if npu_smi.exists():
        mounts.append(Mount(str(npu_smi), NPU_SMI, read_only=True))
    return Devices("ascend", devices, tuple(mounts))


def _nvidia_present(dev_root: Path) -> bool:
    """NVIDIA GPUs: a ``nvidia<N>`` device under ``dev_root`` or ``nvidia-smi`` on PATH."""
    if any(_NVIDIA.fullmatch(name) for name in _list_dir(dev_root)):
        return True
    return shutil.which("nvidia-smi") is not None


def discover_devices(
    device_type: str = "auto",
    *,
    dev_root: PathLike = "/dev",
    driver_dir: PathLike = ASCEND_DRIVER_DIR,
    npu_smi: PathLike = NPU_SMI,
) -> Devices:
    """The accelerators for ``device_type`` (one of ``DEVICE_TYPES``).

    ``auto`` takes Ascend if any ``davinci<N>`` exists, else NVIDIA if present, else CPU;
    ``cpu`` passes no device; ``ascend``/``nvidia`` raise DeviceNotFound when absent.
    ``dev_root``, ``driver_dir`` and ``npu_smi`` point elsewhere than the real host for tests.
    """
    if device_type not in DEVICE_TYPES:
        raise DockerError(
            f"unknown device type {device_type!r} (choose from {', '.join(DEVICE_TYPES)})")
    if device_type == "cpu":
        return Devices("cpu")
    root = Path(dev_root).absolute()
    if device_type in ("auto", "ascend"):
        ascend = _ascend_devices(root, Path(driver_dir).absolute(), Path(npu_smi).absolute())
        if ascend is not None:
            return ascend
        if device_type == "ascend":
            raise DeviceNotFound(
                f"--device-type ascend: no Ascend NPU found (no {root}/davinci<N> device)")
    if _nvidia_present(root):
        return Devices("nvidia", gpus=True)
    if device_type == "nvidia":
        raise DeviceNotFound(
            f"--device-type nvidia: no NVIDIA GPU found (no {root}/nvidia<N> device, "
            "no nvidia-smi on PATH)")
    return Devices("cpu")


# --------------------------------------------------------------------------- commands


def format_command(argv: Sequence[str]) -> str:
    """``argv`` as one shell-quoted line, for ``--dry-run``."""
    return shlex.join(list(argv))


def plan_build(model: str, tag: str | None = None, git_commit: str | None = None) -> list[str]:
    """argv of ``docker build`` for ``model`` (context = repo root, absolute paths).

    ``git_commit`` defaults to the checked-out commit; it becomes ``ZOO_GIT_COMMIT`` in the
    image (a container has no .git). Unknown, it is passed empty (recorded as null).
    """
    dockerfile = dockerfile_path(model)
    commit = git_commit or current_git_commit() or ""
    return ["docker", "build",
            "-f", str(dockerfile),
            "-t", image_tag(model, tag),
            "--build-arg", f"GIT_COMMIT={commit}",
            str(ROOT)]


@dataclass(frozen=True)
class RunSpec:
    """Everything a container run needs; rendered as CLI argv or as Docker SDK arguments."""

    image: str
    command: tuple[str, ...]
    mounts: tuple[Mount, ...]
    devices: Devices
    user: str
    environment: tuple[tuple[str, str], ...] = CONTAINER_ENV
    data: Path | None = None
    weights: Path | None = None
    out: Path | None = None
    cache: Path | None = None

    def argv(self) -> list[str]:
        """argv of ``docker run --rm ...``."""
        args = ["docker", "run", "--rm", "--user", self.user]
        for key, value in self.environment:
            args += ["-e", f"{key}={value}"]
        for mount in self.mounts:
            args += mount.cli_args()
        args += self.devices.cli_args()
        return args + [self.image, *self.command]

    def sdk_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``client.containers.run`` (besides image and command)."""
        from docker import types  # lazily: plan_* must work without the SDK

        mounts = [types.Mount(m.target, m.source, type="bind", read_only=m.read_only)
                  for m in (*self.mounts, *self.devices.mounts)]
        kwargs: dict[str, Any] = {
            "user": self.user,
            "environment": dict(self.environment),
            "mounts": mounts,
        }
        if self.devices.devices:
            kwargs["devices"] = [f"{host}:{container}:rwm"
                                 for host, container in self.devices.devices]
        if self.devices.gpus:
            kwargs["device_requests"] = [types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
        return kwargs


def _host_path(path: PathLike, what: str) -> Path:
    resolved = Path(path).expanduser().resolve()
    if ":" in str(resolved):
        raise DockerError(f"{what} path {str(resolved)!r} contains ':', which docker cannot mount")
    return resolved


def _passed_through(weights: PathLike) -> bool:
    """True for a ``--weights`` that is not a host file: an http(s) URL, or a manifest
    checkpoint name (no path separator, and no such file here)."""
    text = os.fspath(weights)
    if re.match(r"https?://", text):
        return True
    return "/" not in text and os.sep not in text and not Path(text).expanduser().exists()


def _check_zoo_args(zoo_args: Sequence[str]) -> list[str]:
    args = [str(a) for a in zoo_args]
    for arg in args:
        if arg.split("=", 1)[0] in _RESERVED_ZOO_OPTIONS:
            raise DockerError(
                f"zoo argument {arg.split('=', 1)[0]} is set by the docker runner "
                "(give model/data/weights/out as its own arguments)")
    return args


def prepare_run(
    model: str,
    *,
    out: PathLike,
    cache: PathLike,
    data: PathLike | None = None,
    weights: PathLike | None = None,
    tag: str | None = None,
    device_type: str = "auto",
    zoo_args: Sequence[str] = (),
    user: str | None = None,
    dev_root: PathLike = "/dev",
    driver_dir: PathLike = ASCEND_DRIVER_DIR,
    npu_smi: PathLike = NPU_SMI,
) -> RunSpec:
    """The RunSpec behind ``plan_run`` and ``run`` (pure: touches no file)."""
    dockerfile_path(model)
    zoo = _check_zoo_args(zoo_args)
    out_dir, cache_dir = _host_path(out, "results"), _host_path(cache, "cache")
    mounts: list[Mount] = []
    command = ["run", "--model", model, "--out", RESULTS_DIR]
    data_dir = weights_file = None
    if data is not None:
        data_dir = _host_path(data, "data")
        mounts.append(Mount(str(data_dir), DATA_DIR, read_only=True))
        command += ["--data", DATA_DIR]
    if weights is not None and _passed_through(weights):
        command += ["--weights", str(weights)]
    elif weights is not None:
        weights_file = _host_path(weights, "weights")
        mounts.append(Mount(str(weights_file.parent), WEIGHTS_DIR, read_only=True))
        command += ["--weights", f"{WEIGHTS_DIR}/{weights_file.name}"]
    mounts.append(Mount(str(out_dir), RESULTS_DIR, read_only=False))
    mounts.append(Mount(str(cache_dir), CACHE_DIR, read_only=False))
    devices = discover_devices(device_type, dev_root=dev_root, driver_dir=driver_dir,
                               npu_smi=npu_smi)
    return RunSpec(
        image=image_tag(model, tag),
        command=tuple(command + zoo),
        mounts=tuple(mounts),
        devices=devices,
        user=user or f"{os.getuid()}:{os.getgid()}",
        data=data_dir, weights=weights_file, out=out_dir, cache=cache_dir,
    )


def plan_run(model: str, **run_options: Any) -> list[str]:
    """argv of ``docker run --rm`` for ``model``.

    ``out``/``cache`` are host folders mounted read-write at /results and /cache; ``data``
    (a folder) and ``weights`` (a file) are mounted read-only at /data and /weights and
    passed as ``--data /data`` and ``--weights /weights/<file>``, or not mounted at all when
    None. A ``weights`` that is an http(s) URL or a manifest checkpoint name (no path
    separator, no such file) is passed through as is, unmounted. ``zoo_args`` (backend, batch sizes, limit, ...) follow ``run --model <model> ...``
    after the image. ``user`` defaults to the caller's ``uid:gid``. Host paths are made
    absolute. Devices come from ``discover_devices(device_type, ...)``. The keywords are those
    of ``prepare_run``.
    """
    return prepare_run(model, **run_options).argv()


# --------------------------------------------------------------------------- execution (SDK)


def print_line(line: str) -> None:
    """Default log sink: one line to stdout, flushed."""
    print(line, flush=True)


class _Lines:
    """Reassembles lines from chunks of text that may split them."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._pending = ""

    def feed(self, text: str) -> None:
        self._pending += text.replace("\r\n", "\n")
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._log(line)

    def close(self) -> None:
        if self._pending:
            self._log(self._pending)
            self._pending = ""


def _root_reason(exc: BaseException) -> str:
    """A short reason: the innermost OSError's strerror, else the innermost message."""
    seen: set[int] = set()
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for err in reversed(chain):
        if isinstance(err, OSError) and err.strerror:
            return err.strerror
    for err in reversed(chain):
        text = _one_line(str(err), 160)
        if text:
            return text
    return type(exc).__name__


def _docker_endpoint() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _connect() -> Any:
    """A Docker SDK client whose daemon answered a ping; else DockerUnavailable."""
    try:
        import docker
    except ImportError:
        raise DockerUnavailable(
            f"the docker Python SDK is not installed; {_NO_DAEMON_HINT}") from None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # DockerException, requests' ConnectionError, OSError, ...
        raise DockerUnavailable(
            f"no Docker daemon reachable at {_docker_endpoint()} ({_root_reason(exc)}); "
            f"{_NO_DAEMON_HINT}") from exc
    return client


def _sdk_error(action: str, exc: BaseException) -> DockerError:
    explanation = getattr(exc, "explanation", None)
    return DockerError(f"{action} failed: {explanation or _root_reason(exc)}")


def _build_log(chunks: Iterable[dict[str, Any]], tag: str, log: Callable[[str], None]) -> None:
    lines = _Lines(log)
    for chunk in chunks:
        if "error" in chunk:
            lines.close()
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            raise DockerError(f"docker build of {tag} failed: {detail}")
        if "stream" in chunk:
            lines.feed(chunk["stream"])
        elif "status" in chunk and "progressDetail" not in chunk:
            lines.feed(f"{chunk['status']}\n")
    lines.close()


def build(
    model: str,
    tag: str | None = None,
    git_commit: str | None = None,
    *,
    log: Callable[[str], None] = print_line,
) -> str:
    """Build ``model``'s image with the Docker SDK (what ``plan_build`` prints); return its id.

    The build log is streamed line by line to ``log`` while the build runs (through the
    SDK's low-level ``api.build``: ``client.images.build`` only returns the log at the end).
    The context honours ``.dockerignore``.
    """
    dockerfile = dockerfile_path(model)
    tag = image_tag(model, tag)
    commit = git_commit or current_git_commit() or ""
    client = _connect()
    try:
        chunks = client.api.build(
            path=str(ROOT), dockerfile=dockerfile.relative_to(ROOT).as_posix(), tag=tag,
            buildargs={"GIT_COMMIT": commit}, rm=True, forcerm=True, decode=True)
        _build_log(chunks, tag, log)
        return client.images.get(tag).id
    except DockerError:
        raise
    except Exception as exc:
        raise _sdk_error(f"docker build of {tag}", exc) from exc


def run(model: str, *, log: Callable[[str], None] = print_line, **run_options: Any) -> int:
    """Run ``model``'s image with the Docker SDK (what ``plan_run`` prints; the keywords are
    those of ``prepare_run``).

    Checks the data folder and weights file exist, creates the results and cache folders
    (so they belong to the caller), streams the container's output lines to ``log``,
    removes the container, and returns its exit code. The image must have been built.
    """
    spec = prepare_run(model, **run_options)
    if spec.data is not None and not spec.data.is_dir():
        raise DockerError(f"data folder not found: {spec.data}")
    if spec.weights is not None and not spec.weights.is_file():
        raise DockerError(f"weights file not found: {spec.weights}")
    client = _connect()
    for folder in (spec.out, spec.cache):
        assert folder is not None
        folder.mkdir(parents=True, exist_ok=True)
    import docker.errors

    try:
        client.images.get(spec.image)
    except docker.errors.ImageNotFound:
        raise DockerError(f"image {spec.image} not found; build it first") from None
    except Exception as exc:
        raise _sdk_error(f"looking up image {spec.image}", exc) from exc
    try:
        container = client.containers.run(
            spec.image, list(spec.command), detach=True, **spec.sdk_kwargs())
    except Exception as exc:
        raise _sdk_error(f"starting {spec.image}", exc) from exc
    try:
        lines = _Lines(log)
        for chunk in container.logs(stream=True, follow=True):
            lines.feed(chunk.decode("utf-8", errors="replace")
                       if isinstance(chunk, bytes) else str(chunk))
        lines.close()
        status = container.wait()
        return int(status.get("StatusCode", 1))
    except Exception as exc:
        raise _sdk_error(f"running {spec.image}", exc) from exc
    finally:
        try:
            container.remove(force=True)
        except Exception as exc:  # already gone, or the daemon went away: report, go on
            print(f"warning: could not remove container {getattr(container, 'short_id', '?')}:"
                  f" {_root_reason(exc)}", file=sys.stderr)
