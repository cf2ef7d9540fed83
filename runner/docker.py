"""Docker side of the meta-runner: build a model's image and run it like the local run.

Generic over models: a model ``<name>`` has an image when ``models/<name>/Dockerfile``
exists (build context = the repo root, default tag ``zoo/<name>:latest``). That file is the
model's own part: what every image shares is written once in ``runner/dockerfiles/`` and built around it
(``prepare_build``). The image's entrypoint is the local one, ``python -m zoo``, so a container
run is ``python -m zoo run --model <name> ...`` with the data, weights and results folder
mounted at fixed places and everything else locked down (read-only, no network, never root).

The Docker runner is in parts, one job each; this module re-exports the first five's public API
(for tasks.py; no part imports this module):

    runner/image_plan.py     the image's builds (pure): Dockerfiles, content tags, build inputs
    runner/devices.py        the host's accelerators a container is given
    runner/container.py      the container's spec (pure): mounts, user, limits, lock-down
    runner/engine.py         the Docker SDK calls: builds, runs, log streaming, signals
    runner/docker_errors.py  their one-line errors
    runner/image_store.py    the zoo's images on the engine's disk (reuse, pruning)
    runner/engine_check.py   `invoke engine-check`: the images end to end on a real engine

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
"""
from __future__ import annotations

from runner.container import (
    DEFAULT_CACHE_SIZE,
    DEFAULT_PIDS_LIMIT,
    DEFAULT_TMP_SIZE,
    RunSpec,
    container_user,
    plan_prepare,
    plan_run,
    prepare_run,
)
from runner.devices import (
    ASCEND_DRIVER_DIR,
    DEVICE_TYPES,
    DEVICES_LABEL,
    NPU_SMI,
    Devices,
    Mount,
    discover_devices,
    label_devices,
)
from runner.docker_errors import DeviceNotFound, DockerError, DockerUnavailable, UnknownModel
from runner.engine import Interrupted, build, context_archive, image_labels, print_line, run, sdk_calls
from runner.image_plan import (
    BASE_IMAGE_SCRIPT,
    BUILD_INPUTS_DIR,
    INPUTS_LABEL,
    LOCAL_BASE_IMAGE,
    MMCV_BUILD_LOCK,
    SHARED_IMAGES,
    BuildInputs,
    BuildStep,
    build_inputs,
    current_git_commit,
    declared_devices,
    dockerfile_instructions,
    dockerfile_path,
    format_command,
    from_image,
    host_mmcv_wheel,
    image_tag,
    locked_torch,
    plan_build,
    prepare_build,
)

__all__ = [
    "ASCEND_DRIVER_DIR",
    "BASE_IMAGE_SCRIPT",
    "BUILD_INPUTS_DIR",
    "BuildInputs",
    "BuildStep",
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_PIDS_LIMIT",
    "DEFAULT_TMP_SIZE",
    "DEVICE_TYPES",
    "DEVICES_LABEL",
    "INPUTS_LABEL",
    "LOCAL_BASE_IMAGE",
    "MMCV_BUILD_LOCK",
    "NPU_SMI",
    "SHARED_IMAGES",
    "Devices",
    "DeviceNotFound",
    "DockerError",
    "DockerUnavailable",
    "Interrupted",
    "Mount",
    "RunSpec",
    "UnknownModel",
    "build",
    "build_inputs",
    "container_user",
    "context_archive",
    "current_git_commit",
    "declared_devices",
    "discover_devices",
    "dockerfile_instructions",
    "dockerfile_path",
    "format_command",
    "from_image",
    "host_mmcv_wheel",
    "image_labels",
    "image_tag",
    "label_devices",
    "locked_torch",
    "plan_build",
    "plan_prepare",
    "plan_run",
    "prepare_build",
    "prepare_run",
    "print_line",
    "run",
    "sdk_calls",
]
