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
  asking to download it first and pass the file;
- ``--init``: the engine's init is PID 1 and hands signals on to ``python -m zoo``, so that
  ``docker stop`` (SIGTERM) ends a run promptly with 143 instead of killing it after the timeout.

Without ``data``/``weights`` nothing is mounted for them: the image has its built-in data
and checkpoint. The accelerators found on the host are passed (see ``discover_devices``); NVIDIA
GPUs only to an image whose ``io.zoo.devices`` label lists ``nvidia`` (or on an explicit
``--device-type nvidia``): the zoo's images are CPU-only, and ``--gpus all`` fails on a host
without the NVIDIA container toolkit. ``run`` removes its container in every case (one that
could not start included) and forwards Ctrl-C/SIGTERM to it (exit 130/143, one line).

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
dev_root="/dev", driver_dir=ASCEND_DRIVER_DIR, npu_smi=NPU_SMI, image_devices=None) -> list[str]``
    argv of ``docker run --rm ...`` (for ``--dry-run``; the image's device kinds as its
    Dockerfiles declare them, ``declared_devices``).
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
    output lines to ``log``; returns the container's exit code (130/143 when Ctrl-C/SIGTERM
    stopped it; ``Interrupted`` when it had to be removed first).
``discover_devices(device_type="auto", *, dev_root="/dev", driver_dir=ASCEND_DRIVER_DIR,
npu_smi=NPU_SMI, image_devices=("cpu",)) -> Devices``
    the accelerators to pass to the container; ``DEVICE_TYPES`` lists the choices.

Errors are ``DockerError`` subclasses with one-line messages, fit for ``sys.exit(str(err))``:
``UnknownModel`` (no ``models/<name>/Dockerfile``), ``DeviceNotFound`` (explicit
``ascend``/``nvidia`` without such a device), ``DockerUnavailable`` (no daemon reachable, or
the SDK missing), ``Interrupted`` (``.code`` 130/143). ``plan_*`` need neither the SDK nor a daemon.

The SDK talks to ``DOCKER_HOST`` (default ``unix:///var/run/docker.sock``); it does not
follow the docker CLI's contexts.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from runner import MODELS_DIR, ROOT, image_store

__all__ = [
    "ASCEND_DRIVER_DIR",
    "BuildStep",
    "DEVICE_TYPES",
    "NPU_SMI",
    "Devices",
    "DeviceNotFound",
    "DockerError",
    "DEVICES_LABEL",
    "DockerUnavailable",
    "Interrupted",
    "Mount",
    "RunSpec",
    "UnknownModel",
    "build",
    "current_git_commit",
    "declared_devices",
    "discover_devices",
    "dockerfile_path",
    "format_command",
    "image_labels",
    "image_tag",
    "label_devices",
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

# The label an image declares its device kinds in (comma-separated: ``cpu``, ``cpu,nvidia``);
# absent: CPU-only. Device auto-detection passes NVIDIA GPUs only to an image that declares them.
DEVICES_LABEL = "io.zoo.devices"

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


def label_devices(labels: dict[str, str] | None) -> tuple[str, ...]:
    """The device kinds an image declares in its ``DEVICES_LABEL`` (comma-separated, e.g.
    ``cpu,nvidia``); an image without the label is CPU-only (``("cpu",)``)."""
    text = (labels or {}).get(DEVICES_LABEL, "")
    kinds = tuple(k.strip().lower() for k in text.split(",") if k.strip())
    return kinds or ("cpu",)


def declared_devices(model: str) -> tuple[str, ...]:
    """The device kinds ``model``'s image will declare, read from the ``LABEL`` instructions of
    its Dockerfile and the shared core (the last one wins, as in the image): what a dry run
    assumes of an image it cannot inspect."""
    labels: dict[str, str] = {}
    for path in (dockerfile_path(model), ROOT / CORE_DOCKERFILE):
        for keyword, rest in dockerfile_instructions(path):
            if keyword == "LABEL":
                for word in shlex.split(rest):
                    key, _, value = word.partition("=")
                    labels[key] = value
    return label_devices(labels)


def discover_devices(
    device_type: str = "auto",
    *,
    dev_root: PathLike = "/dev",
    driver_dir: PathLike = ASCEND_DRIVER_DIR,
    npu_smi: PathLike = NPU_SMI,
    image_devices: Sequence[str] = ("cpu",),
) -> Devices:
    """The accelerators for ``device_type`` (one of ``DEVICE_TYPES``).

    ``auto`` takes Ascend if any ``davinci<N>`` exists, else NVIDIA if present AND the image
    declares it (``"nvidia" in image_devices``: ``--gpus all`` fails on a host without the
    NVIDIA container toolkit, and a CPU-only image has no use for it), else CPU; ``cpu`` passes
    no device; ``ascend``/``nvidia`` ask for them whatever the image says, and raise
    DeviceNotFound when absent. ``dev_root``, ``driver_dir`` and ``npu_smi`` point elsewhere
    than the real host for tests.
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
    wants_nvidia = device_type == "nvidia" or "nvidia" in image_devices
    if wants_nvidia and _nvidia_present(root):
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
    """One ``docker build`` of a model's image (context = the repo root).

    ``inputs``: (path in the context, host file) pairs added under ``BUILD_INPUTS_DIR`` to the
    context of this build only (``BuildInputs.files``): the build inputs, for the Dockerfiles
    whose build stages copy that folder."""

    dockerfile: Path
    tag: str
    buildargs: tuple[tuple[str, str], ...]
    inputs: tuple[tuple[str, Path], ...] = ()

    def argv(self) -> list[str]:
        """argv of this ``docker build`` (absolute paths)."""
        argv = ["docker", "build", "-f", str(self.dockerfile), "-t", self.tag]
        for key, value in self.buildargs:
            argv += ["--build-arg", f"{key}={value}"]
        return argv + [str(ROOT)]


def from_image(step: BuildStep) -> str | None:
    """The image the last stage of ``step``'s Dockerfile builds FROM, its build args (``step``'s,
    else the Dockerfile's defaults) filled in; None if there is no FROM."""
    values = {k: v for k, v in _global_args(step.dockerfile).items() if v is not None}
    values.update(step.buildargs)
    froms = [[w for w in rest.split() if not w.startswith("--")]
             for keyword, rest in dockerfile_instructions(step.dockerfile) if keyword == "FROM"]
    if not froms or not froms[-1]:
        return None
    name = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), ""), froms[-1][0])
    return name or None


def _base_image(base_image: str | None) -> str:
    """``base_image`` (checked; ``local`` is ``LOCAL_BASE_IMAGE``), else the digest pin written in
    runner/dockerfiles/base.Dockerfile."""
    if base_image == "local":
        return LOCAL_BASE_IMAGE
    if base_image is None:
        pin = _global_args(ROOT / BASE_DOCKERFILE).get("BASE_IMAGE")
        if not pin:
            raise DockerError(f"{BASE_DOCKERFILE}: no default for ARG BASE_IMAGE")
        return pin
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*", base_image):
        raise DockerError(f"base image {base_image!r} is not an image reference")
    return base_image


# --------------------------------------------------------------------------- build inputs

# The folder of the build context that build stages copy to /tmp/build-inputs/ (empty in the repo
# but for its README): runner/dockerfiles/install-lock.sh maps its files to pip's environment.
BUILD_INPUTS_DIR = "runner/dockerfiles/build-inputs"
# The label that records a build's inputs by name and hash (``describe_inputs``): given to the
# builds with inputs (so an image is reused only for the same inputs) and, by core.Dockerfile, to
# the final image.
INPUTS_LABEL = "io.zoo.build-inputs"
# The python base `runner/base_image.sh` makes from Debian packages (`--base-image local`).
LOCAL_BASE_IMAGE = "zoo/python-local:3.11-bookworm"
BASE_IMAGE_SCRIPT = "runner/base_image.sh"
# mmcv's wheel as runner/mmcv_wheel.sh keeps it: <wheels>/torch-<torch>/mmcv-2.1.0-<py>-<py>-<platform>.whl,
# for the images' python (3.11: the pinned base and the local one).
MMCV_WHEEL_GLOB = "mmcv-2.1.0-{py}-{py}-linux_{machine}.whl"
IMAGE_PYTHON_TAG = "cp311"
MMCV_BUILD_LOCK = "runner/mmcv-build/requirements.lock"


@dataclass(frozen=True)
class BuildInputs:
    """What ``invoke build --pip-config/--ca-bundle/--wheels`` gives the build stages (checked,
    absolute), and the host's mmcv wheel for the images with the mmcv stage."""

    pip_config: Path | None = None
    ca_bundle: Path | None = None
    wheels: Path | None = None
    mmcv_wheel: Path | None = None

    def files(self, with_mmcv: bool = False) -> tuple[tuple[str, Path], ...]:
        """(path in the context, host file) pairs under ``BUILD_INPUTS_DIR``: ``pip.conf``,
        ``ca.pem``, ``wheels/<name>`` (the folder's ``*.whl``, ``*.tar.gz`` and ``*.zip``); with
        ``with_mmcv`` (the mmcv image) and a host wheel, only ``mmcv/<wheel>`` (nothing to
        install from an index then)."""
        out: list[tuple[str, Path]] = []
        if self.pip_config is not None:
            out.append((f"{BUILD_INPUTS_DIR}/pip.conf", self.pip_config))
        if self.ca_bundle is not None:
            out.append((f"{BUILD_INPUTS_DIR}/ca.pem", self.ca_bundle))
        if self.wheels is not None:
            out += [(f"{BUILD_INPUTS_DIR}/wheels/{f.name}", f) for f in _wheel_files(self.wheels)]
        if with_mmcv and self.mmcv_wheel is not None:  # reused: the stage needs no pip input
            return ((f"{BUILD_INPUTS_DIR}/mmcv/{self.mmcv_wheel.name}", self.mmcv_wheel),)
        return tuple(out)


def _wheel_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file()
                  and f.name.endswith((".whl", ".tar.gz", ".zip")))


def build_inputs(pip_config: PathLike | None = None, ca_bundle: PathLike | None = None,
                 wheels: PathLike | None = None) -> BuildInputs:
    """The checked build inputs: ``pip_config`` a file, ``ca_bundle`` a file with a PEM
    certificate, ``wheels`` a folder with at least one wheel; else a one-line DockerError."""
    def existing(value: PathLike | None, option: str, folder: bool = False) -> Path | None:
        if value is None:
            return None
        path = Path(value).expanduser().resolve()
        if not (path.is_dir() if folder else path.is_file()):
            raise DockerError(f"{option} {value}: no such {'folder' if folder else 'file'}")
        return path

    pip = existing(pip_config, "--pip-config")
    ca = existing(ca_bundle, "--ca-bundle")
    folder = existing(wheels, "--wheels", folder=True)
    if ca is not None and b"-----BEGIN CERTIFICATE-----" not in ca.read_bytes():
        raise DockerError(f"--ca-bundle {ca_bundle}: no PEM certificate in it")
    if folder is not None and not _wheel_files(folder):
        raise DockerError(f"--wheels {wheels}: no *.whl (or sdist) in it")
    return BuildInputs(pip, ca, folder)


def locked_torch(lock: Path) -> str | None:
    """The ``torch==`` version a hash lock pins (None: none)."""
    match = re.search(r"^torch==(\S+)", lock.read_text(), re.MULTILINE) if lock.is_file() else None
    return match.group(1) if match else None


def wheel_cache_dir() -> Path:
    """Where runner/mmcv_wheel.sh keeps its wheels: ``$ZOO_CACHE/wheels``, else ``work/cache/wheels``."""
    return Path(os.environ.get("ZOO_CACHE") or ROOT / "work" / "cache") / "wheels"


def host_mmcv_wheel(model: str, wheels: PathLike | None = None,
                    machine: str | None = None) -> tuple[Path | None, str]:
    """The host's mmcv wheel ``model``'s image may reuse, with the reason (for the build log).

    Reused only when it is built for the torch the image gets: the folder
    ``torch-<version>`` of runner/mmcv_wheel.sh must be the torch that both
    ``runner/mmcv-build/requirements.lock`` (what the build stage would compile against) and the
    model's own lock pin, its python tag the images' (``IMAGE_PYTHON_TAG``) and its platform this
    machine's. ``wheels`` defaults to ``wheel_cache_dir()``."""
    torch = locked_torch(ROOT / MMCV_BUILD_LOCK)
    model_torch = locked_torch(MODELS_DIR / model / "requirements.lock")
    if torch is None or torch != model_torch:
        return None, (f"not reusing a host mmcv wheel: {MMCV_BUILD_LOCK} pins torch {torch}, "
                      f"models/{model}/requirements.lock torch {model_torch}")
    folder = Path(wheels or wheel_cache_dir()) / f"torch-{torch}"
    name = MMCV_WHEEL_GLOB.format(py=IMAGE_PYTHON_TAG, machine=machine or os.uname().machine)
    found = folder / name
    if not found.is_file():
        return None, f"no host mmcv wheel {found} (torch {torch}): compiling it in the build stage"
    return found, f"reusing the host's mmcv wheel {found} (torch {torch})"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_inputs(files: Iterable[tuple[str, Path]]) -> str:
    """``pip.conf sha256:<hex> <size>; ca.pem ...; wheels <n>``: the image's label
    io.zoo.build-inputs (names and hashes, never contents)."""
    parts, wheels = [], 0
    for name, source in files:
        rel = name.removeprefix(BUILD_INPUTS_DIR + "/")
        if rel.startswith("wheels/"):
            wheels += 1
        else:
            parts.append(f"{rel} sha256:{_sha256(source)} {source.stat().st_size}")
    return "; ".join(parts + ([f"wheels {wheels}"] if wheels else []))


def _copies_build_inputs(path: Path) -> bool:
    """True when a Dockerfile copies ``BUILD_INPUTS_DIR`` (its build stages take the inputs)."""
    return any(keyword == "COPY" and rest.split()[0].rstrip("/") == BUILD_INPUTS_DIR
               for keyword, rest in dockerfile_instructions(path) if rest)


def prepare_build(model: str, tag: str | None = None, git_commit: str | None = None,
                  base_image: str | None = None, inputs: BuildInputs | None = None,
                  host_mmcv: bool = True) -> list[BuildStep]:
    """The builds of ``model``'s image, in order (pure: builds nothing).

    1. the shared images (``SHARED_IMAGES``) that ``models/<model>/Dockerfile`` builds FROM,
       each after the ones it builds FROM itself (zoo/mmcv after zoo/base), tagged
       ``<repository>:<hash of its contents>``; ``BASE_IMAGE`` (``base_image``, default the
       digest pin of runner/dockerfiles/base.Dockerfile) goes to those that declare it;
    2. the model's own Dockerfile (its environment, its CMD), tagged ``zoo/<model>-env:<hash>``;
    3. ``runner/dockerfiles/core.Dockerfile`` on top (``MODEL_IMAGE``, ``MODEL``, ``GIT_COMMIT``), tagged
       ``image_tag(model, tag)``: the core is copied last, so a code change rebuilds only it.

    A build arg a Dockerfile declares before its FROM without a default, and that is none of
    these, is an error (the build could only fail).

    ``inputs`` (``build_inputs``) go to the builds whose Dockerfile copies ``BUILD_INPUTS_DIR``
    (``BuildStep.inputs``; they decide no tag: the locks decide what is installed). With
    ``host_mmcv`` the mmcv image is offered the host's wheel (``host_mmcv_wheel``): it gets it as
    an input and its sha256 as ``MMCV_WHEEL_SHA256`` (so a reused wheel is another zoo/mmcv tag)."""
    model_file = dockerfile_path(model)
    values = {"BASE_IMAGE": _base_image(base_image)}
    steps: list[BuildStep] = []
    inputs = inputs or BuildInputs()
    if host_mmcv and inputs.mmcv_wheel is None:
        wheel, _ = host_mmcv_wheel(model)
        inputs = BuildInputs(inputs.pip_config, inputs.ca_bundle, inputs.wheels, wheel)

    def step(path: Path, step_tag: str, args: dict[str, str]) -> BuildStep:
        files = inputs.files(with_mmcv=path == ROOT / SHARED_IMAGES["ZOO_MMCV"][0])
        return BuildStep(path, step_tag, tuple(args.items()),
                         files if _copies_build_inputs(path) else ())

    def args_of(path: Path, chain: tuple[str, ...]) -> dict[str, str]:
        args: dict[str, str] = {}
        for name, default in _global_args(path).items():
            if name in SHARED_IMAGES and name not in values:
                if name in chain:
                    raise DockerError(f"shared images build FROM each other in a cycle: {name}")
                shared, repository = SHARED_IMAGES[name]
                shared_args = args_of(ROOT / shared, (*chain, name))
                if name == "ZOO_MMCV" and inputs.mmcv_wheel is not None:
                    shared_args["MMCV_WHEEL_SHA256"] = _sha256(inputs.mmcv_wheel)
                values[name] = _content_tag(repository, ROOT / shared, shared_args)
                steps.append(step(ROOT / shared, values[name], shared_args))
            if name in values:
                args[name] = values[name]
            elif default is None:
                raise DockerError(
                    f"{path.relative_to(ROOT).as_posix()}: build arg {name} has no default "
                    f"and is none of the shared images ({', '.join(SHARED_IMAGES)})")
        return args

    model_args = args_of(model_file, ())
    env_tag = _content_tag(f"zoo/{model.lower()}-env", model_file, model_args)
    steps.append(step(model_file, env_tag, model_args))
    core_args = (("MODEL_IMAGE", env_tag), ("MODEL", model),
                 ("GIT_COMMIT", git_commit or current_git_commit() or ""))
    if steps[-1].inputs:  # what the environment was installed with, by hash (core.Dockerfile)
        core_args += (("BUILD_INPUTS", describe_inputs(steps[-1].inputs)),)
    steps.append(BuildStep(ROOT / CORE_DOCKERFILE, image_tag(model, tag), core_args))
    return steps


def plan_build(model: str, tag: str | None = None, git_commit: str | None = None,
               base_image: str | None = None, inputs: BuildInputs | None = None,
               host_mmcv: bool = True) -> list[list[str]]:
    """The ``docker build`` commands of ``model``'s image, in order (``prepare_build``; context
    = repo root, absolute paths).

    ``git_commit`` defaults to the checked-out commit; it becomes ``ZOO_GIT_COMMIT`` in the
    image (a container has no .git). Unknown, it is passed empty (recorded as null).
    ``base_image`` (e.g. ``python:3.11-slim-bookworm@sha256:...``) replaces the pinned python
    base (``BASE_IMAGE`` of runner/dockerfiles/base.Dockerfile, and of the mmcv build stage);
    ``local`` is ``LOCAL_BASE_IMAGE`` (made by runner/base_image.sh). ``inputs``/``host_mmcv``: as
    for ``prepare_build`` (the files a build adds to its context: ``BuildStep.inputs``).
    """
    return [step.argv() for step in prepare_build(model, tag, git_commit, base_image, inputs,
                                                   host_mmcv)]


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
    # An init (the engine's docker-init, tini) as PID 1: it forwards signals to ``python -m zoo``
    # (which handles SIGTERM: ``docker stop`` ends it promptly with 143, not 137 after the
    # timeout) and reaps the processes an ``--isolate`` sweep leaves.
    init: bool = True

    def argv(self) -> list[str]:
        """argv of ``docker run --rm ...``."""
        args = ["docker", "run", "--rm", *(["--init"] if self.init else []), "--user", self.user,
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
            "init": self.init,
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
    image_devices: Sequence[str] | None = None,
    euid: int | None = None,
    uid: int | None = None,
    gid: int | None = None,
) -> RunSpec:
    """The RunSpec behind ``plan_run`` and ``run`` (pure: touches no file). ``image_devices``:
    the device kinds the image declares (``label_devices`` of its labels; ``run`` reads them
    from the built image), default what its Dockerfiles declare (``declared_devices``).
    ``euid``/``uid``/``gid`` stand for the caller's ids (default: this process's), for tests."""
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
    devices = discover_devices(
        device_type, dev_root=dev_root, driver_dir=driver_dir, npu_smi=npu_smi,
        image_devices=declared_devices(model) if image_devices is None else tuple(image_devices))
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


def _connect(hint: str = _NO_DAEMON_HINT) -> Any:
    """A Docker SDK client whose daemon answered a ping; else DockerUnavailable (its message ends
    with ``hint``: what the caller can do without a daemon)."""
    try:
        import docker
    except ImportError:
        raise DockerUnavailable(
            f"the docker Python SDK is not installed; {hint}") from None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # DockerException, requests' ConnectionError, OSError, ...
        raise DockerUnavailable(
            f"no Docker daemon reachable at {_docker_endpoint()} ({_root_reason(exc)}); "
            f"{hint}") from exc
    return client


def _sdk_error(action: str, exc: BaseException) -> DockerError:
    explanation = getattr(exc, "explanation", None)
    return DockerError(f"{action} failed: {explanation or _root_reason(exc)}")


class sdk_calls:
    """``with sdk_calls("pruning images"):`` -- the Docker SDK's own errors inside (an engine that
    answers ping but fails requests: docker.errors.APIError, a dropped connection) become one
    DockerError line naming the action and the engine's reason, never a traceback."""

    def __init__(self, action: str) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, DockerError) or not isinstance(exc, Exception):
            return False
        import docker.errors
        import requests.exceptions
        if isinstance(exc, (docker.errors.DockerException, requests.exceptions.RequestException)):
            raise _sdk_error(f"{self.action} on the engine at {_docker_endpoint()}", exc) from exc
        return False


def _build_log(chunks: Iterable[dict[str, Any]], tag: str, log: Callable[[str], None]) -> list[str]:
    """Stream a build's log to ``log``; return the ids of the images its earlier stages ended at
    (``image_store.StageTracker``); a build error is one DockerError line."""
    from runner.image_store import StageTracker

    stages = StageTracker()

    def line(text: str) -> None:
        stages.feed(text)
        log(text)

    lines = _Lines(line)
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
    return stages.ends


def _dockerignore() -> list[str]:
    """The patterns of the repo's ``.dockerignore`` (as the SDK reads them)."""
    path = ROOT / ".dockerignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _add_tree_entry(tar: Any, arcname: str) -> None:
    import tarfile

    info = tarfile.TarInfo(arcname)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(info)


def context_archive(step: BuildStep) -> Any:
    """The build context of ``step`` as an uncompressed tar in a temporary file (positioned at
    0; a context manager): the repo's files as ``docker build`` sends them (``.dockerignore``),
    but of ``BUILD_INPUTS_DIR`` only what git tracks there (README.md, .gitignore: files staged
    there by hand are not sent), plus ``step.inputs`` (owner root, mode 0644; the daemon's
    COPY cache keys on contents, not times)."""
    import tarfile
    import tempfile

    from docker.utils.build import exclude_paths

    dockerfile = step.dockerfile.relative_to(ROOT).as_posix()
    staged = {name for name, _ in step.inputs}
    handle = tempfile.TemporaryFile()
    with tarfile.open(fileobj=handle, mode="w") as tar:
        for rel in sorted(exclude_paths(str(ROOT), _dockerignore(), dockerfile=dockerfile)):
            rel = rel.replace(os.sep, "/")
            if (rel.startswith(BUILD_INPUTS_DIR + "/")
                    and rel.rsplit("/", 1)[-1] not in ("README.md", ".gitignore")):
                continue
            tar.add(str(ROOT / rel), arcname=rel, recursive=False)
        folders = sorted({name.rsplit("/", 1)[0] for name in staged} - {BUILD_INPUTS_DIR})
        for folder in folders:
            _add_tree_entry(tar, folder)
        for name, source in step.inputs:
            info = tar.gettarinfo(str(source), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o644
            with open(source, "rb") as fh:
                tar.addfile(info, fh)
    handle.seek(0)
    return handle


def build(
    model: str,
    tag: str | None = None,
    git_commit: str | None = None,
    *,
    base_image: str | None = None,
    inputs: BuildInputs | None = None,
    host_mmcv: bool = True,
    log: Callable[[str], None] = print_line,
    rebuild: bool = False,
) -> str:
    """Build ``model``'s image with the Docker SDK: the builds ``plan_build`` prints, in order
    (the shared images first, then the model's Dockerfile, then the core on top); return the
    final image's id.

    A shared or environment image whose content tag is already here, built on the image its
    last stage builds FROM as that image is now and with the same inputs (``INPUTS_LABEL``;
    ``image_store.reusable``), is not built again (``rebuild``: build every step anyway); the
    core is always built. After each build the untagged images its earlier stages ended at (an
    install stage is a whole environment) are removed (``image_store.drop_stages``): the tag, not
    the builder's cache, is what is reused.

    Each build's log is streamed line by line to ``log`` while it runs (through the SDK's
    low-level ``api.build``: ``client.images.build`` only returns the log at the end), after a
    line naming the build. The context honours ``.dockerignore``; a build with inputs
    (``BuildStep.inputs``: ``inputs``, the host's mmcv wheel with ``host_mmcv``) is sent a
    context made here (``context_archive``): the same files plus the inputs, which exist on
    no disk of the repo.
    """
    steps = prepare_build(model, tag, git_commit, base_image, inputs, host_mmcv)
    if host_mmcv and any(s.dockerfile == ROOT / SHARED_IMAGES["ZOO_MMCV"][0] for s in steps):
        log(host_mmcv_wheel(model)[1])
    client = _connect()
    for index, step in enumerate(steps):
        dockerfile = step.dockerfile.relative_to(ROOT).as_posix()
        try:
            labels = {INPUTS_LABEL: describe_inputs(step.inputs)} if step.inputs else {}
            if (not rebuild and index < len(steps) - 1
                    and image_store.reusable(client, step.tag, from_image(step), labels)):
                log(f"==> {step.tag} ({dockerfile}): here already, on its current base"
                    f"{' and inputs' if labels else ''}: not built again")
                continue
            log(f"==> {step.tag} ({dockerfile})")
            if step.inputs:
                with context_archive(step) as context:
                    chunks = client.api.build(
                        fileobj=context, custom_context=True, dockerfile=dockerfile,
                        tag=step.tag, buildargs=dict(step.buildargs), rm=True, forcerm=True,
                        decode=True, labels=labels)
                    stages = _build_log(chunks, step.tag, log)
            else:
                chunks = client.api.build(
                    path=str(ROOT), dockerfile=dockerfile, tag=step.tag,
                    buildargs=dict(step.buildargs), rm=True, forcerm=True, decode=True)
                stages = _build_log(chunks, step.tag, log)
            image_store.drop_stages(client, stages, log)
        except DockerError:
            raise
        except Exception as exc:
            raise _sdk_error(f"docker build of {step.tag}", exc) from exc
    try:
        return client.images.get(steps[-1].tag).id
    except Exception as exc:
        raise _sdk_error(f"docker build of {steps[-1].tag}", exc) from exc


class Interrupted(DockerError):
    """A run stopped by SIGINT (Ctrl-C) or SIGTERM whose container had to be removed before it
    ended by itself (a second signal, or not stopped within ``STOP_GRACE`` seconds); ``code``
    is the exit code the caller should use (130 or 143)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _Terminated(KeyboardInterrupt):
    """SIGTERM during ``run``, raised in the main thread like Ctrl-C's KeyboardInterrupt."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


# Seconds a container has to end by itself after the first SIGINT/SIGTERM was forwarded to it.
STOP_GRACE = 30.0


def _start(client: Any, spec: RunSpec, command: Sequence[str] | None = None, **extra: Any) -> Any:
    """Create and start ``spec``'s container (``command`` replaces the spec's; ``extra``: more
    SDK arguments, e.g. an entrypoint for the engine tests); a container that cannot start is
    removed, never left behind in "Created" state."""
    try:
        container = client.containers.create(
            spec.image, list(spec.command if command is None else command), detach=True,
            **spec.sdk_kwargs(), **extra)
    except Exception as exc:
        raise _sdk_error(f"creating a container of {spec.image}", exc) from exc
    try:
        container.start()
    except BaseException as exc:
        _remove(container)
        if isinstance(exc, Exception):
            raise _sdk_error(f"starting {spec.image}", exc) from exc
        raise
    return container


def _remove(container: Any) -> None:
    """Remove ``container`` (killing it if it still runs); a failure is a warning."""
    try:
        container.remove(force=True)
    except Exception as exc:  # already gone, or the daemon went away: report, go on
        print(f"warning: could not remove container {getattr(container, 'short_id', '?')}:"
              f" {_root_reason(exc)}", file=sys.stderr)


def _stream(container: Any, log: Callable[[str], None], failure: list[BaseException],
            done: Any) -> None:
    """Feed the container's output to ``log`` line by line until it ends (a log thread), then
    set ``done`` (a threading.Event)."""
    try:
        lines = _Lines(log)
        for chunk in container.logs(stream=True, follow=True):
            lines.feed(chunk.decode("utf-8", errors="replace")
                       if isinstance(chunk, bytes) else str(chunk))
        lines.close()
    except Exception as exc:  # the daemon went away: the main thread reports it
        failure.append(exc)
    finally:
        done.set()


def _follow(container: Any, log: Callable[[str], None], grace: float = STOP_GRACE) -> int:
    """Stream the container's output until it ends and return its exit code.

    SIGINT (Ctrl-C) and SIGTERM are forwarded to the container (its init hands them to
    ``python -m zoo``, which stops with one line and 130/143, writing nothing); its exit code
    is returned as usual. A second signal, or a container still running ``grace`` seconds
    after the first, raises Interrupted (the caller removes the container). The output is
    read in a thread so that the main thread, waiting on it, receives the signals (on an Event:
    a Thread.join cut short by KeyboardInterrupt may report a live thread as ended)."""
    import threading

    failure: list[BaseException] = []
    done = threading.Event()
    reader = threading.Thread(target=_stream, args=(container, log, failure, done), daemon=True)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    # Ctrl-C explicitly: a process started from a background job inherits SIGINT ignored
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler) if in_main else None
    sent: tuple[signal.Signals, float] | None = None
    try:
        reader.start()
        while not done.is_set():
            try:
                done.wait(0.2)
                if sent and time.monotonic() - sent[1] > grace:
                    raise Interrupted(f"{_signal_words(sent[0])}: the container did not stop "
                                      f"within {grace:g} s and was removed", 128 + sent[0])
            except KeyboardInterrupt as exc:
                sig = signal.SIGTERM if isinstance(exc, _Terminated) else signal.SIGINT
                if sent:
                    raise Interrupted(f"{_signal_words(sent[0])} twice: the container was "
                                      "removed", 128 + sent[0]) from None
                sent = (sig, time.monotonic())
                try:
                    container.kill(signal=sig.name)
                except Exception:  # it has just ended by itself: its exit code tells
                    pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            signal.signal(signal.SIGINT, previous_int if previous_int is not None else signal.SIG_DFL)
    if failure:
        raise failure[0]
    return int(container.wait().get("StatusCode", 1))


def _signal_words(sig: int) -> str:
    return "terminated (SIGTERM)" if sig == signal.SIGTERM else "interrupted"


def image_labels(client: Any, image: str) -> dict[str, str]:
    """The labels of a built ``image``; DockerError when it is not there."""
    import docker.errors

    try:
        return dict(client.images.get(image).labels or {})
    except docker.errors.ImageNotFound:
        raise DockerError(f"image {image} not found; build it first") from None
    except Exception as exc:
        raise _sdk_error(f"looking up image {image}", exc) from exc


def run(model: str, *, log: Callable[[str], None] = print_line, **run_options: Any) -> int:
    """Run ``model``'s image with the Docker SDK (what ``plan_run`` prints; the keywords are
    those of ``prepare_run``).

    Checks the data folder and weights file exist, prepares ``<out>/<model>`` for the
    container's user (``plan_prepare``), takes the device kinds from the built image's label
    (``DEVICES_LABEL``), streams the container's output lines to ``log``, removes the
    container (also one that failed to start, or was interrupted), and returns its exit code:
    130/143 when Ctrl-C/SIGTERM, forwarded to the container, stopped it (``_follow``). The
    image must have been built.
    """
    spec = prepare_run(model, **run_options)
    if spec.data is not None and not spec.data.is_dir():
        raise DockerError(f"data folder not found: {spec.data}")
    if spec.weights is not None and not spec.weights.is_file():
        raise DockerError(f"weights file not found: {spec.weights}")
    client = _connect()
    _prepare_results(spec)
    kinds = label_devices(image_labels(client, spec.image))
    if "image_devices" not in run_options:
        spec = prepare_run(model, image_devices=kinds, **run_options)
    container = _start(client, spec)
    try:
        return _follow(container, log)
    except DockerError:
        raise
    except Exception as exc:
        raise _sdk_error(f"running {spec.image}", exc) from exc
    finally:
        _remove(container)
