"""The accelerators on this host that a container of a model's image is given.

``discover_devices(device_type="auto", *, dev_root="/dev", driver_dir=ASCEND_DRIVER_DIR,
npu_smi=NPU_SMI, image_devices=("cpu",)) -> Devices``: Ascend NPUs (``/dev/davinci<N>``, their
control devices, the driver folder and npu-smi read-only) when present, else NVIDIA GPUs
(``--gpus all``) only to an image whose ``io.zoo.devices`` label lists ``nvidia`` (or on an
explicit ``--device-type nvidia``): the zoo's images are CPU-only, and ``--gpus all`` fails on a
host without the NVIDIA container toolkit; else none. ``DEVICE_TYPES`` lists the choices;
``label_devices`` reads an image's device kinds from its labels. Reads only the host's ``/dev``
and PATH: no Docker SDK, no daemon.
"""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from runner.docker_errors import DeviceNotFound, DockerError

__all__ = ["ASCEND_DRIVER_DIR", "DEVICES_LABEL", "DEVICE_TYPES", "NPU_SMI", "Devices", "Mount",
           "PathLike", "discover_devices", "label_devices"]

PathLike = Union[str, "os.PathLike[str]"]

DEVICE_TYPES = ("auto", "cpu", "ascend", "nvidia")
ASCEND_DRIVER_DIR = "/usr/local/Ascend/driver"
NPU_SMI = "/usr/local/sbin/npu-smi"
ASCEND_CONTROL_DEVICES = ("davinci_manager", "devmm_svm", "hisi_hdc")

# The label an image declares its device kinds in (comma-separated: ``cpu``, ``cpu,nvidia``);
# absent: CPU-only. Device auto-detection passes NVIDIA GPUs only to an image that declares them.
DEVICES_LABEL = "io.zoo.devices"

_DAVINCI = re.compile(r"davinci(\d+)")
_NVIDIA = re.compile(r"nvidia(\d+)")


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

