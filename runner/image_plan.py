"""The plan of a model's image (pure: reads the repo's files, builds nothing, needs no SDK).

A model ``<name>`` (``zoo.registry``: models/ and ZOO_MODEL_DIRS) has an image when its folder has a
``Dockerfile`` (build context = the repo root, default tag ``zoo/<name>:latest``). That file is the
model's own part: what every image shares is written once in ``runner/dockerfiles/`` and built
around it (``prepare_build``). The Dockerfiles copy a model's files from ``models/<name>/`` of the
context: a ZOO_MODEL_DIRS model's folder is placed there (``context_dirs``: in its content tags,
and in the context ``runner.engine`` sends), so that in the image it sits where the zoo's own do,
``/opt/zoo/models/<name>/``.

``prepare_build(model, tag=None, git_commit=None, base_image=None, inputs=None, host_mmcv=True)
-> list[BuildStep]``
    the builds (Dockerfile, tag, build args, build inputs): the shared images its Dockerfile
    builds FROM tagged ``<repository>:<hash of their contents>``, the model's
    ``zoo/<model>-env:<hash>``, the final ``zoo/<model>:latest`` (``runner/dockerfiles/core.Dockerfile``).
``plan_build(...) -> list[list[str]]``
    their ``docker build`` commands, in order (for ``--dry-run``); ``format_command`` makes one
    shell-quoted line of a command.
``build_inputs(pip_config, ca_bundle, wheels) -> BuildInputs``
    what ``invoke build --pip-config/--ca-bundle/--wheels`` gives the build stages (checked), and
    ``host_mmcv_wheel``: the host's mmcv wheel an OpenMMLab image may reuse.
``dockerfile_path``, ``context_dirs``, ``context_name``, ``image_tag``, ``current_git_commit``,
``declared_devices`` (the device kinds the image's Dockerfiles declare), ``from_image`` (what a
build's last stage builds FROM).

``runner.engine.build`` runs these builds with the Docker SDK.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runner import ROOT
from runner.devices import PathLike, label_devices
from runner.docker_errors import DockerError, UnknownModel
from zoo import registry
from zoo.errors import ZooError

__all__ = ["BASE_DOCKERFILE", "BASE_IMAGE_SCRIPT", "BUILD_INPUTS_DIR", "CORE_DOCKERFILE", "INPUTS_LABEL",
           "LOCAL_BASE_IMAGE", "MMCV_BUILD_LOCK", "MODELS_IN_CONTEXT", "SHARED_IMAGES", "BuildInputs", "BuildStep",
           "build_inputs", "context_dirs", "context_name", "current_git_commit", "declared_devices",
           "describe_inputs", "dockerfile_instructions", "dockerfile_path", "format_command", "from_image",
           "host_mmcv_wheel", "image_tag", "locked_torch", "plan_build", "prepare_build", "wheel_cache_dir"]

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
# The folder of the build context the Dockerfiles copy a model's files from (models/<name>/...).
MODELS_IN_CONTEXT = "models"

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# --------------------------------------------------------------------------- models, tags, commit


def _model_files(model: str) -> registry.ModelFiles:
    """The registry's files of ``model`` (a name, never a path); UnknownModel otherwise."""
    if not _MODEL_NAME.fullmatch(model or ""):
        raise UnknownModel(f"invalid model name {model!r}")
    try:
        return registry.find(model)
    except registry.UnknownModel as exc:
        raise UnknownModel(str(exc)) from None
    except ZooError as exc:  # a name defined twice
        raise DockerError(str(exc)) from None


def _shown(path: Path) -> str:
    """``path`` relative to the repo when it is inside it (``models/unetpp/Dockerfile``), else absolute."""
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def dockerfile_path(model: str) -> Path:
    """The model's ``Dockerfile`` (``models/<model>/Dockerfile``, or in its ZOO_MODEL_DIRS
    folder); raises UnknownModel if the model has none."""
    path = _model_files(model).dockerfile
    if not path.is_file():
        raise UnknownModel(f"unknown model {model!r}: no {_shown(path)}")
    return path


def context_dirs(model: str) -> tuple[tuple[str, Path], ...]:
    """(folder in the build context, host folder) pairs the context must hold beyond the repo's
    files: ``models/<model>`` -> its folder for a model kept outside the repo's models/
    (ZOO_MODEL_DIRS), since the Dockerfiles copy ``models/<model>/``; () for the zoo's own."""
    files = _model_files(model)
    in_context = f"{MODELS_IN_CONTEXT}/{files.name}"
    return () if files.dir == ROOT / in_context else ((in_context, files.dir),)


def context_name(path: Path, dirs: Sequence[tuple[str, Path]] = ()) -> str:
    """The path of the host file ``path`` in the build context: relative to the repo root, or
    under the context folder of the ``dirs`` (``context_dirs``) that holds it."""
    for folder, host in dirs:
        if path.is_relative_to(host):
            return PurePosixPath(folder, path.relative_to(host).as_posix()).as_posix()
    if path.is_relative_to(ROOT):
        return path.relative_to(ROOT).as_posix()
    raise DockerError(f"{path}: not in the build context (the repo, or a model folder of ZOO_MODEL_DIRS)")


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


def _source_matches(source: str, dirs: Sequence[tuple[str, Path]]) -> list[Path]:
    """The host paths a COPY/ADD source of the context names: in the repo, or in the host folder
    of a ``dirs`` entry whose context folder holds it."""
    rel = source.rstrip("/")
    for folder, host in dirs:
        if rel == folder or rel.startswith(folder + "/"):
            base, rel = host, rel[len(folder):].lstrip("/")
            break
    else:
        base = ROOT
    if any(c in rel for c in "*?["):
        return list(base.glob(rel))
    return [base / rel if rel else base]


def _copy_sources(path: Path, dirs: Sequence[tuple[str, Path]] = ()) -> list[tuple[str, Path]]:
    """The files of the build context a Dockerfile copies (COPY/ADD sources, not ``--from``), as
    (path in the context, host file) pairs in path order; ``dirs``: ``context_dirs``."""
    files: dict[str, Path] = {}
    for keyword, rest in dockerfile_instructions(path):
        words = rest.split()
        if keyword not in ("COPY", "ADD") or any(w.startswith("--from") for w in words):
            continue
        for source in [w for w in words if not w.startswith("--")][:-1]:
            for match in _source_matches(source, dirs):
                found = [match] if match.is_file() else sorted(match.rglob("*"))
                files.update((context_name(f, dirs), f) for f in found if f.is_file()
                             and "__pycache__" not in f.parts and f.suffix != ".pyc")
    return sorted(files.items(), key=lambda item: PurePosixPath(item[0]))


def _content_tag(repository: str, path: Path, buildargs: dict[str, str],
                 dirs: Sequence[tuple[str, Path]] = ()) -> str:
    """``<repository>:<hash>``: the hash of the Dockerfile, the files it copies and its build
    args (the tags of the images it builds FROM carry their own hashes), so that a build never
    starts from an image built from other contents (a stale base). Files are named by their
    path in the context (``dirs``: ``context_dirs``), so a model's tag does not depend on where
    its folder is on the host."""
    digest = hashlib.sha256()
    for name, file in ((context_name(path, dirs), path), *_copy_sources(path, dirs)):
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    for key, value in sorted(buildargs.items()):
        digest.update(f"{key}={value}\0".encode())
    return f"{repository}:{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class BuildStep:
    """One ``docker build`` of a model's image (context = the repo root).

    ``inputs``: (path in the context, host file) pairs added under ``BUILD_INPUTS_DIR`` to the
    context of this build only (``BuildInputs.files``): the build inputs, for the Dockerfiles
    whose build stages copy that folder. ``context_dirs``: (folder in the context, host folder)
    pairs added to its context (``context_dirs()``: a ZOO_MODEL_DIRS model's folder as
    ``models/<name>``), for the model's build and the core's."""

    dockerfile: Path
    tag: str
    buildargs: tuple[tuple[str, str], ...]
    inputs: tuple[tuple[str, Path], ...] = ()
    context_dirs: tuple[tuple[str, Path], ...] = ()

    @property
    def context_dockerfile(self) -> str:
        """The Dockerfile's path in the build context (``models/<name>/Dockerfile``)."""
        return context_name(self.dockerfile, self.context_dirs)

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
    lock = _model_files(model).lock
    model_torch = locked_torch(lock)
    if torch is None or torch != model_torch:
        return None, (f"not reusing a host mmcv wheel: {MMCV_BUILD_LOCK} pins torch {torch}, "
                      f"{_shown(lock)} torch {model_torch}")
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

    1. the shared images (``SHARED_IMAGES``) that the model's Dockerfile builds FROM,
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
    an input and its sha256 as ``MMCV_WHEEL_SHA256`` (so a reused wheel is another zoo/mmcv tag).

    A ZOO_MODEL_DIRS model's folder is the context's ``models/<model>/`` (``context_dirs``) for
    the builds 2 and 3 (``BuildStep.context_dirs``) and in its content tag."""
    model_file = dockerfile_path(model)
    overlay = context_dirs(model)
    values = {"BASE_IMAGE": _base_image(base_image)}
    steps: list[BuildStep] = []
    inputs = inputs or BuildInputs()
    if host_mmcv and inputs.mmcv_wheel is None:
        wheel, _ = host_mmcv_wheel(model)
        inputs = BuildInputs(inputs.pip_config, inputs.ca_bundle, inputs.wheels, wheel)

    def step(path: Path, step_tag: str, args: dict[str, str],
             dirs: tuple[tuple[str, Path], ...] = ()) -> BuildStep:
        files = inputs.files(with_mmcv=path == ROOT / SHARED_IMAGES["ZOO_MMCV"][0])
        return BuildStep(path, step_tag, tuple(args.items()),
                         files if _copies_build_inputs(path) else (), dirs)

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
                    f"{_shown(path)}: build arg {name} has no default "
                    f"and is none of the shared images ({', '.join(SHARED_IMAGES)})")
        return args

    model_args = args_of(model_file, ())
    env_tag = _content_tag(f"zoo/{model.lower()}-env", model_file, model_args, overlay)
    steps.append(step(model_file, env_tag, model_args, overlay))
    core_args = (("MODEL_IMAGE", env_tag), ("MODEL", model),
                 ("GIT_COMMIT", git_commit or current_git_commit() or ""))
    if steps[-1].inputs:  # what the environment was installed with, by hash (core.Dockerfile)
        core_args += (("BUILD_INPUTS", describe_inputs(steps[-1].inputs)),)
    steps.append(BuildStep(ROOT / CORE_DOCKERFILE, image_tag(model, tag), core_args, (), overlay))
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
