"""The container of a model's run (pure: decides, touches no file, needs no SDK or daemon).

The image's entrypoint is the local one, ``python -m zoo``, so a container run is
``python -m zoo run --model <name> ...`` with host paths mounted at fixed places:

    /data             the data folder, read-only     (only when ``data`` is given: ``--data /data``)
    /weights/<file>   the weights FILE, read-only    (only when ``weights`` is a file:
                                                      ``--weights /weights/<file>``)
    /results/<model>  <out>/<model>, read-write      (``--out /results``): the ONLY writable mount

Everything else is locked down, the same in the printed command (``plan_run``) and the SDK
run (``runner.engine.run``), both rendered from one ``RunSpec`` (``prepare_run``):

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
and checkpoint. The host's accelerators come from ``runner.devices.discover_devices``.
``plan_prepare`` lists the host commands ``run`` performs before the container (create, and as
root chown, the results subfolder).
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.devices import ASCEND_DRIVER_DIR, NPU_SMI, Devices, Mount, PathLike, discover_devices
from runner.docker_errors import DockerError
from runner.image_plan import declared_devices, dockerfile_path, image_tag

__all__ = ["DEFAULT_CACHE_SIZE", "DEFAULT_PIDS_LIMIT", "DEFAULT_TMP_SIZE", "IMAGE_GID", "IMAGE_UID", "RunSpec",
           "container_user", "plan_prepare", "plan_run", "prepare_run"]

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
# zoo options whose values are container paths set by plan_run itself.
_RESERVED_ZOO_OPTIONS = ("--model", "--out", "--data", "--weights")


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

