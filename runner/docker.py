"""Docker side of the meta-runner: build a model's image and run it like the local run.

Generic over models: a model ``<name>`` has an image when ``models/<name>/Dockerfile``
exists (build context = the repo root, default tag ``zoo/<name>:latest``). That file is the
model's own part: what every image shares is written once in ``runner/dockerfiles/`` and built around it
(``prepare_build``). The image's
entrypoint is the local one, ``python -m zoo``, so a container run is
``python -m zoo run --model <name> ...`` with host paths mounted at fixed places:

    /data             the data folder, read-only     (only when ``data`` is given: ``--data /data``)
    /weights/<file>   the weights FILE, read-only    (only when ``weights`` is a file:
                                                      ``--weights /weights/<file>``)
    /results/<model>  <out>/<model>, read-write      (``--out /results``): the ONLY writable mount

Everything else is locked down, the same in the printed command (``plan_run``) and the SDK
run (``run``), both rendered from one ``RunSpec``:

- user: never root. The image's user ``1000:1000`` (runner/dockerfiles/core.Dockerfile ``USER``) when the
  caller is root (``run`` then creates ``<out>/<model>`` and chowns it to 1000:1000) or uid
  1000; another non-root caller runs as its own ``uid:gid`` so that it owns the results;
- ``--read-only`` root filesystem; ``/tmp`` and the zoo's cache ``/cache`` (``ZOO_CACHE``) are
  size-limited tmpfs (``tmp_size``, ``cache_size``): exports and compiled models live for one
  run, so results stay the only thing written to the host;
- ``--cap-drop ALL``, ``--security-opt no-new-privileges``, ``--pids-limit`` (``pids_limit``),
  ``--memory`` = ``--memory-swap`` when ``memory`` is given (default: no memory limit);
- ``--network none``: nothing is downloaded at run time. A ``weights`` URL, or a checkpoint
  (named, or the manifest's default) that is only a URL, is refused with a one-line error
  asking to download it first and pass the file.

Without ``data``/``weights`` nothing is mounted for them: the image has its built-in data
and checkpoint. The accelerators found on the host are passed (see ``discover_devices``).

API (for tasks.py)
------------------
``plan_build(model, tag=None, git_commit=None, base_image=None) -> list[list[str]]``
    the ``docker build`` commands of the model's image, in order (for ``--dry-run``): the shared
    images its Dockerfile builds FROM, the model's Dockerfile, then ``runner/dockerfiles/core.Dockerfile``
    (see ``prepare_build``); ``base_image`` becomes ``--build-arg BASE_IMAGE`` of the builds that
    start from the python base.
``prepare_build(model, tag=None, git_commit=None, base_image=None) -> list[BuildStep]``
    those builds (Dockerfile, tag, build args): shared images tagged ``<repository>:<hash of
    their contents>``, the model's ``zoo/<model>-env:<hash>``, the final ``zoo/<model>:latest``.
``plan_run(model, *, out, data=None, weights=None, tag=None, device_type="auto", zoo_args=(),
memory=None, pids_limit=DEFAULT_PIDS_LIMIT, cache_size=DEFAULT_CACHE_SIZE, tmp_size=DEFAULT_TMP_SIZE,
dev_root="/dev", driver_dir=ASCEND_DRIVER_DIR, npu_smi=NPU_SMI) -> list[str]``
    argv of ``docker run --rm ...`` (for ``--dry-run``).
``plan_prepare(model, *, out) -> list[list[str]]``
    the host commands ``run`` performs before the container (create, and as root chown, the
    results subfolder), for ``--dry-run`` to print before the ``docker run`` line.
``format_command(argv) -> str``
    one shell-quoted line (``shlex.join``).
``build(model, tag=None, git_commit=None, *, base_image=None, log=print_line) -> str``
    runs those builds in order with the Docker SDK, streaming the build log lines to ``log``;
    returns the final image's id.
``run(model, *, <the keywords of plan_run>, log=print_line) -> int``
    runs with the Docker SDK (same mounts, limits, devices, user), streaming the container's
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

import hashlib
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
    "BuildStep",
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
    "plan_prepare",
    "plan_run",
    "prepare_build",
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
CACHE_DIR = "/cache"  # ZOO_CACHE of the images
TMP_DIR = "/tmp"
# HOME on the one writable place of the root filesystem (a caller's uid has no passwd entry, and
# zoo's home folder is read-only under --read-only).
CONTAINER_ENV = (("HOME", TMP_DIR),)
# The images' non-root user (runner/dockerfiles/base.Dockerfile: useradd --uid 1000; runner/dockerfiles/core.Dockerfile:
# USER 1000:1000).
IMAGE_UID = IMAGE_GID = 1000
# Defaults of the run's limits: pids (threads count: a 2-thread run uses ~100, a many-core host's
# thread pools a few hundred), the cache tmpfs (exports + compiled models of one run: FCN's
# ONNX graph and its ONNX Runtime/OpenVINO forms are ~0.5 GB) and /tmp.
DEFAULT_PIDS_LIMIT = 4096
DEFAULT_CACHE_SIZE = "4g"
DEFAULT_TMP_SIZE = "1g"
_TMPFS_FLAGS = "rw,nosuid,nodev,noexec"
_SIZE = re.compile(r"[1-9][0-9]*[kmg]?", re.IGNORECASE)

# The shared Dockerfiles (runner/dockerfiles/), built around a model's own models/<name>/Dockerfile:
# the images a Dockerfile may build FROM, by the build arg that names them (declared before its
# first FROM), with their repository: tagged <repository>:<hash of their contents>.
SHARED_IMAGES = {
    "ZOO_BASE": ("runner/dockerfiles/base.Dockerfile", "zoo/base"),  # python base, user, folders, entrypoint
    "ZOO_MMCV": ("runner/dockerfiles/mmcv.Dockerfile", "zoo/mmcv"),  # + mmcv 2.1.0 with its ops (fcn8s, nasfpn)
}
BASE_DOCKERFILE = SHARED_IMAGES["ZOO_BASE"][0]  # writes the python base's digest pin (BASE_IMAGE)
# The last layers of every image (the core, the model's folder, labels, USER), built FROM the
# model's image (MODEL_IMAGE, tagged zoo/<model>-env:<hash>).
CORE_DOCKERFILE = "runner/dockerfiles/core.Dockerfile"

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


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined, comments and
    parser directives dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue
        if not current and not line:
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


def _global_args(path: Path) -> dict[str, str | None]:
    """The build args a Dockerfile declares before its first FROM (the ones FROM may use), with
    their defaults (None: no default)."""
    args: dict[str, str | None] = {}
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, sep, default = rest.partition("=")
            args[name.strip()] = default.strip() if sep else None
    return args


def _copy_sources(path: Path) -> list[Path]:
    """The files of the build context a Dockerfile copies (COPY/ADD sources, not ``--from``)."""
    files: set[Path] = set()
    for keyword, rest in dockerfile_instructions(path):
        words = rest.split()
        if keyword not in ("COPY", "ADD") or any(w.startswith("--from") for w in words):
            continue
        for source in [w for w in words if not w.startswith("--")][:-1]:
            for match in (ROOT.glob(source.rstrip("/")) if any(c in source for c in "*?[")
                          else [ROOT / source]):
                found = [match] if match.is_file() else sorted(match.rglob("*"))
                files.update(f for f in found if f.is_file() and "__pycache__" not in f.parts
                             and f.suffix != ".pyc")
    return sorted(files)


def _content_tag(repository: str, path: Path, buildargs: dict[str, str]) -> str:
    """``<repository>:<hash>``: the hash of the Dockerfile, the files it copies and its build
    args (the tags of the images it builds FROM carry their own hashes), so that a build never
    starts from an image built from other contents (a stale base)."""
    digest = hashlib.sha256()
    for file in (path, *_copy_sources(path)):
        digest.update(file.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    for key, value in sorted(buildargs.items()):
        digest.update(f"{key}={value}\0".encode())
    return f"{repository}:{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class BuildStep:
    """One ``docker build`` of a model's image (context = the repo root)."""

    dockerfile: Path
    tag: str
    buildargs: tuple[tuple[str, str], ...]

    def argv(self) -> list[str]:
        """argv of this ``docker build`` (absolute paths)."""
        argv = ["docker", "build", "-f", str(self.dockerfile), "-t", self.tag]
        for key, value in self.buildargs:
            argv += ["--build-arg", f"{key}={value}"]
        return argv + [str(ROOT)]


def _base_image(base_image: str | None) -> str:
    """``base_image`` (checked), else the digest pin written in runner/dockerfiles/base.Dockerfile."""
    if base_image is None:
        pin = _global_args(ROOT / BASE_DOCKERFILE).get("BASE_IMAGE")
        if not pin:
            raise DockerError(f"{BASE_DOCKERFILE}: no default for ARG BASE_IMAGE")
        return pin
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*", base_image):
        raise DockerError(f"base image {base_image!r} is not an image reference")
    return base_image


def prepare_build(model: str, tag: str | None = None, git_commit: str | None = None,
                  base_image: str | None = None) -> list[BuildStep]:
    """The builds of ``model``'s image, in order (pure: builds nothing).

    1. the shared images (``SHARED_IMAGES``) that ``models/<model>/Dockerfile`` builds FROM,
       each after the ones it builds FROM itself (zoo/mmcv after zoo/base), tagged
       ``<repository>:<hash of its contents>``; ``BASE_IMAGE`` (``base_image``, default the
       digest pin of runner/dockerfiles/base.Dockerfile) goes to those that declare it;
    2. the model's own Dockerfile (its environment, its CMD), tagged ``zoo/<model>-env:<hash>``;
    3. ``runner/dockerfiles/core.Dockerfile`` on top (``MODEL_IMAGE``, ``MODEL``, ``GIT_COMMIT``), tagged
       ``image_tag(model, tag)``: the core is copied last, so a code change rebuilds only it.

    A build arg a Dockerfile declares before its FROM without a default, and that is none of
    these, is an error (the build could only fail)."""
    model_file = dockerfile_path(model)
    values = {"BASE_IMAGE": _base_image(base_image)}
    steps: list[BuildStep] = []

    def args_of(path: Path, chain: tuple[str, ...]) -> dict[str, str]:
        args: dict[str, str] = {}
        for name, default in _global_args(path).items():
            if name in SHARED_IMAGES and name not in values:
                if name in chain:
                    raise DockerError(f"shared images build FROM each other in a cycle: {name}")
                shared, repository = SHARED_IMAGES[name]
                shared_args = args_of(ROOT / shared, (*chain, name))
                values[name] = _content_tag(repository, ROOT / shared, shared_args)
                steps.append(BuildStep(ROOT / shared, values[name], tuple(shared_args.items())))
            if name in values:
                args[name] = values[name]
            elif default is None:
                raise DockerError(
                    f"{path.relative_to(ROOT).as_posix()}: build arg {name} has no default "
                    f"and is none of the shared images ({', '.join(SHARED_IMAGES)})")
        return args

    model_args = args_of(model_file, ())
    env_tag = _content_tag(f"zoo/{model.lower()}-env", model_file, model_args)
    steps.append(BuildStep(model_file, env_tag, tuple(model_args.items())))
    core_args = (("MODEL_IMAGE", env_tag), ("MODEL", model),
                 ("GIT_COMMIT", git_commit or current_git_commit() or ""))
    steps.append(BuildStep(ROOT / CORE_DOCKERFILE, image_tag(model, tag), core_args))
    return steps


def plan_build(model: str, tag: str | None = None, git_commit: str | None = None,
               base_image: str | None = None) -> list[list[str]]:
    """The ``docker build`` commands of ``model``'s image, in order (``prepare_build``; context
    = repo root, absolute paths).

    ``git_commit`` defaults to the checked-out commit; it becomes ``ZOO_GIT_COMMIT`` in the
    image (a container has no .git). Unknown, it is passed empty (recorded as null).
    ``base_image`` (e.g. ``python:3.11-slim-bookworm@sha256:...``) replaces the pinned python
    base (``BASE_IMAGE`` of runner/dockerfiles/base.Dockerfile, and of the mmcv build stage).
    """
    return [step.argv() for step in prepare_build(model, tag, git_commit, base_image)]


@dataclass(frozen=True)
class RunSpec:
    """Everything a container run needs; rendered as CLI argv or as Docker SDK arguments."""

    image: str
    command: tuple[str, ...]
    mounts: tuple[Mount, ...]
    devices: Devices
    user: str
    tmpfs: tuple[tuple[str, str], ...] = ()
    pids_limit: int = DEFAULT_PIDS_LIMIT
    memory: str | None = None
    environment: tuple[tuple[str, str], ...] = CONTAINER_ENV
    data: Path | None = None
    weights: Path | None = None
    out: Path | None = None
    results: Path | None = None  # <out>/<model>: the one writable mount

    def argv(self) -> list[str]:
        """argv of ``docker run --rm ...``."""
        args = ["docker", "run", "--rm", "--user", self.user,
                "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "--network", "none", "--pids-limit", str(self.pids_limit)]
        if self.memory is not None:
            args += ["--memory", self.memory, "--memory-swap", self.memory]
        for target, options in self.tmpfs:
            args += ["--tmpfs", f"{target}:{options}"]
        for key, value in self.environment:
            args += ["-e", f"{key}={value}"]
        for mount in self.mounts:
            args += mount.cli_args()
        args += self.devices.cli_args()
        return args + [self.image, *self.command]

    def sdk_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``client.containers.run`` (besides image and command): the
        same user, limits, mounts and devices as ``argv``."""
        from docker import types  # lazily: plan_* must work without the SDK

        mounts = [types.Mount(m.target, m.source, type="bind", read_only=m.read_only)
                  for m in (*self.mounts, *self.devices.mounts)]
        kwargs: dict[str, Any] = {
            "user": self.user,
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "network_mode": "none",
            "pids_limit": self.pids_limit,
            "tmpfs": dict(self.tmpfs),
            "environment": dict(self.environment),
            "mounts": mounts,
        }
        if self.memory is not None:
            kwargs["mem_limit"] = self.memory
            kwargs["memswap_limit"] = self.memory
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
    if re.match(r"https?://", text, re.IGNORECASE):
        return True
    return "/" not in text and os.sep not in text and not Path(text).expanduser().exists()


def _download_url(model: str, weights: PathLike | None) -> str | None:
    """The URL the container would have to download for ``weights`` (None: nothing to fetch).

    An http(s) ``weights`` is one; a checkpoint name (or None: the manifest's default) is one
    when its manifest entry has a ``url`` and no ``path`` in the repo. An unreadable manifest or
    unknown name is left to the zoo's own error inside the container."""
    text = None if weights is None else os.fspath(weights)
    if text is not None and re.match(r"https?://", text, re.IGNORECASE):
        return text
    try:
        from zoo.manifest import load_manifest  # the one manifest reader (yaml + schema)

        spec = load_manifest(model).weights
        entry = spec["checkpoints"].get(text or spec.get("default"))
    except Exception:  # an unreadable or invalid manifest: the zoo reports it in the container
        return None
    if isinstance(entry, dict) and entry.get("url") and not entry.get("path"):
        return str(entry["url"])
    return None


def _check_zoo_args(zoo_args: Sequence[str]) -> list[str]:
    args = [str(a) for a in zoo_args]
    for arg in args:
        if arg.split("=", 1)[0] in _RESERVED_ZOO_OPTIONS:
            raise DockerError(
                f"zoo argument {arg.split('=', 1)[0]} is set by the docker runner "
                "(give model/data/weights/out as its own arguments)")
    return args


def _size(value: Any, what: str) -> str:
    """A docker size (``512m``, ``8g``; a bare number of MB is taken as MB)."""
    text = str(value).strip().lower()
    if re.fullmatch(r"[1-9][0-9]*", text):
        text += "m"
    if not _SIZE.fullmatch(text):
        raise DockerError(f"{what} {value!r} is not a size (e.g. 512m, 8g, or a number of MB)")
    return text


def container_user(euid: int | None = None, uid: int | None = None, gid: int | None = None) -> str:
    """The container's ``uid:gid``: never root. The image's user (1000:1000) for a root caller
    or a caller that is uid 1000, else the caller's own non-root ``uid:gid``."""
    euid = os.geteuid() if euid is None else euid
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    if euid == 0 or uid in (0, IMAGE_UID):
        return f"{IMAGE_UID}:{IMAGE_GID}"
    return f"{uid}:{gid}"


def prepare_run(
    model: str,
    *,
    out: PathLike,
    data: PathLike | None = None,
    weights: PathLike | None = None,
    tag: str | None = None,
    device_type: str = "auto",
    zoo_args: Sequence[str] = (),
    memory: Any = None,
    pids_limit: int = DEFAULT_PIDS_LIMIT,
    cache_size: Any = DEFAULT_CACHE_SIZE,
    tmp_size: Any = DEFAULT_TMP_SIZE,
    dev_root: PathLike = "/dev",
    driver_dir: PathLike = ASCEND_DRIVER_DIR,
    npu_smi: PathLike = NPU_SMI,
    euid: int | None = None,
    uid: int | None = None,
    gid: int | None = None,
) -> RunSpec:
    """The RunSpec behind ``plan_run`` and ``run`` (pure: touches no file). ``euid``/``uid``/
    ``gid`` stand for the caller's ids (default: this process's), for tests."""
    dockerfile_path(model)
    zoo = _check_zoo_args(zoo_args)
    url = _download_url(model, weights)
    if url is not None:
        what = f"--weights {weights}" if weights is not None else f"{model}'s default checkpoint"
        raise DockerError(
            f"{what} must be downloaded, and a container runs without network: download it "
            f"first and pass the file as --weights FILE (from {url})")
    if isinstance(pids_limit, bool) or not isinstance(pids_limit, int) or pids_limit < 1:
        raise DockerError(f"pids limit must be a positive integer, got {pids_limit!r}")
    out_dir = _host_path(out, "results")
    results = out_dir / model
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
        target = f"{WEIGHTS_DIR}/{weights_file.name}"
        mounts.append(Mount(str(weights_file), target, read_only=True))
        command += ["--weights", target]
    mounts.append(Mount(str(results), f"{RESULTS_DIR}/{model}", read_only=False))
    tmpfs = ((TMP_DIR, f"{_TMPFS_FLAGS},size={_size(tmp_size, 'tmp size')},mode=1777"),
             (CACHE_DIR, f"{_TMPFS_FLAGS},size={_size(cache_size, 'cache size')},mode=1777"))
    devices = discover_devices(device_type, dev_root=dev_root, driver_dir=driver_dir,
                               npu_smi=npu_smi)
    return RunSpec(
        image=image_tag(model, tag),
        command=tuple(command + zoo),
        mounts=tuple(mounts),
        devices=devices,
        user=container_user(euid, uid, gid),
        tmpfs=tmpfs,
        pids_limit=pids_limit,
        memory=None if memory is None else _size(memory, "memory limit"),
        data=data_dir, weights=weights_file, out=out_dir, results=results,
    )


def plan_run(model: str, **run_options: Any) -> list[str]:
    """argv of ``docker run --rm`` for ``model``.

    ``out`` is the host results folder: its ``<model>`` subfolder is mounted read-write at
    ``/results/<model>`` (the only writable mount); ``data`` (a folder) and ``weights`` (a
    file: the file itself) are mounted read-only at /data and /weights/<file> and passed as
    ``--data /data`` and ``--weights /weights/<file>``, or not mounted at all when None. A
    ``weights`` that is a manifest checkpoint name (no path separator, no such file) is passed
    through as is, unmounted; one that must be downloaded (a URL) is refused. ``zoo_args``
    (backend, batch sizes, limit, ...) follow ``run --model <model> ...`` after the image. Host
    paths are made absolute. Devices come from ``discover_devices(device_type, ...)``. The
    keywords are those of ``prepare_run``; the module docstring lists the lock-down flags.
    """
    return prepare_run(model, **run_options).argv()


def _prepare_steps(spec: RunSpec, euid: int | None = None) -> list[list[str]]:
    assert spec.results is not None
    steps = [["mkdir", "-p", str(spec.results)]]
    if (os.geteuid() if euid is None else euid) == 0:
        steps.append(["chown", f"{IMAGE_UID}:{IMAGE_GID}", str(spec.results)])
    return steps


def plan_prepare(model: str, **run_options: Any) -> list[list[str]]:
    """The host commands ``run`` performs before starting the container (argv lists): create
    ``<out>/<model>`` and, when the caller is root, chown it to the image's user. The keywords
    are those of ``prepare_run``."""
    return _prepare_steps(prepare_run(model, **run_options), run_options.get("euid"))


def _prepare_results(spec: RunSpec) -> None:
    """Create ``<out>/<model>`` so that the container's user can write it: as root, chown it
    to 1000:1000 (the container then never needs to be root); otherwise the container runs
    as the caller (or is uid 1000), who owns the folder."""
    assert spec.results is not None
    try:
        spec.results.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(spec.results, IMAGE_UID, IMAGE_GID)
    except OSError as exc:
        raise DockerError(f"{spec.results}: cannot prepare the results folder "
                          f"({exc.strerror or exc})") from exc
    if not spec.results.is_dir():
        raise DockerError(f"{spec.results}: results path exists and is not a folder")


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
    base_image: str | None = None,
    log: Callable[[str], None] = print_line,
) -> str:
    """Build ``model``'s image with the Docker SDK: the builds ``plan_build`` prints, in order
    (the shared images first, then the model's Dockerfile, then the core on top); return the
    final image's id.

    Each build's log is streamed line by line to ``log`` while it runs (through the SDK's
    low-level ``api.build``: ``client.images.build`` only returns the log at the end), after a
    line naming the build. The context honours ``.dockerignore``.
    """
    steps = prepare_build(model, tag, git_commit, base_image)
    client = _connect()
    for step in steps:
        dockerfile = step.dockerfile.relative_to(ROOT).as_posix()
        log(f"==> {step.tag} ({dockerfile})")
        try:
            chunks = client.api.build(
                path=str(ROOT), dockerfile=dockerfile, tag=step.tag,
                buildargs=dict(step.buildargs), rm=True, forcerm=True, decode=True)
            _build_log(chunks, step.tag, log)
        except DockerError:
            raise
        except Exception as exc:
            raise _sdk_error(f"docker build of {step.tag}", exc) from exc
    try:
        return client.images.get(steps[-1].tag).id
    except Exception as exc:
        raise _sdk_error(f"docker build of {steps[-1].tag}", exc) from exc


def run(model: str, *, log: Callable[[str], None] = print_line, **run_options: Any) -> int:
    """Run ``model``'s image with the Docker SDK (what ``plan_run`` prints; the keywords are
    those of ``prepare_run``).

    Checks the data folder and weights file exist, prepares ``<out>/<model>`` for the
    container's user (``plan_prepare``), streams the container's output lines to ``log``,
    removes the container, and returns its exit code. The image must have been built.
    """
    spec = prepare_run(model, **run_options)
    if spec.data is not None and not spec.data.is_dir():
        raise DockerError(f"data folder not found: {spec.data}")
    if spec.weights is not None and not spec.weights.is_file():
        raise DockerError(f"weights file not found: {spec.weights}")
    client = _connect()
    _prepare_results(spec)
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
