"""The Docker engine's side of the runner: the SDK calls that build a model's image and run its
container, the log streaming, and the signals forwarded to a running container.

``build(model, tag=None, git_commit=None, *, base_image=None, inputs=None, host_mmcv=True,
log=print_line, rebuild=False) -> str``
    runs the builds of ``runner.image_plan.prepare_build`` in order with the Docker SDK,
    streaming their log lines to ``log`` (reusing content-tagged images already here and removing
    the build stages: ``runner.image_store``); returns the final image's id.
``run(model, *, <the keywords of runner.container.prepare_run>, log=print_line) -> int``
    runs the container of ``runner.container.prepare_run`` (same mounts, limits, devices, user),
    streaming its output lines to ``log``; returns its exit code (130/143 when Ctrl-C/SIGTERM,
    forwarded to it, stopped it; ``Interrupted`` when it had to be removed first). It removes the
    container in every case (one that could not start included).
``connect(hint)`` a client whose daemon answered (else ``DockerUnavailable``), ``reachable()``,
``sdk_calls(action)`` (the SDK's errors as one DockerError line), ``image_labels``.

The SDK talks to ``DOCKER_HOST`` (default ``unix:///var/run/docker.sock``); it does not
follow the docker CLI's contexts.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from runner import ROOT, image_store
from runner.container import IMAGE_GID, IMAGE_UID, RunSpec, prepare_run
from runner.devices import label_devices
from runner.docker_errors import DockerError, DockerUnavailable, one_line
from runner.image_plan import (
    BUILD_INPUTS_DIR,
    INPUTS_LABEL,
    SHARED_IMAGES,
    BuildInputs,
    BuildStep,
    describe_inputs,
    from_image,
    host_mmcv_wheel,
    prepare_build,
)

__all__ = ["STOP_GRACE", "Interrupted", "build", "connect", "context_archive", "image_labels", "print_line",
           "reachable", "run", "sdk_calls"]

_NO_DAEMON_HINT = "use --dry-run to print the docker commands"


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
        text = one_line(str(err), 160)
        if text:
            return text
    return type(exc).__name__


def _docker_endpoint() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(hint: str = _NO_DAEMON_HINT) -> Any:
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




def reachable() -> bool:
    """True when a Docker daemon answers (``connect``)."""
    try:
        connect()
        return True
    except DockerError:
        return False


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
    stages = image_store.StageTracker()

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


def _folder_entries(folder: str, host: Path, dockerfile: str) -> list[tuple[str, Path]]:
    """(path in the context, host path) of ``host``'s folders and files placed at ``folder`` of
    the context, the repo's ``.dockerignore`` applied to those context paths (as if the folder
    were in the repo there: ``**/__pycache__`` is left out); ``dockerfile`` is always sent."""
    from docker.utils.build import PatternMatcher

    matcher = PatternMatcher([*_dockerignore(), f"!{dockerfile}"])
    entries = [(folder, host)]

    def walk(current: Path, name: str) -> None:
        for child in sorted(current.iterdir()):
            rel = f"{name}/{child.name}"
            if matcher.matches(rel):
                continue
            entries.append((rel, child))
            if child.is_dir() and not child.is_symlink():
                walk(child, rel)

    walk(host, folder)
    return entries


def context_archive(step: BuildStep) -> Any:
    """The build context of ``step`` as an uncompressed tar in a temporary file (positioned at
    0; a context manager): the repo's files as ``docker build`` sends them (``.dockerignore``),
    but of ``BUILD_INPUTS_DIR`` only what git tracks there (README.md, .gitignore: files staged
    there by hand are not sent), plus ``step.context_dirs`` (a ZOO_MODEL_DIRS model's folder at
    ``models/<name>/``, in place of anything the repo has there) and ``step.inputs`` (owner
    root, mode 0644; the daemon's COPY cache keys on contents, not times)."""
    import tarfile
    import tempfile

    from docker.utils.build import exclude_paths

    dockerfile = step.context_dockerfile
    placed = tuple(folder for folder, _ in step.context_dirs)
    staged = {name for name, _ in step.inputs}
    handle = tempfile.TemporaryFile()
    with tarfile.open(fileobj=handle, mode="w") as tar:
        for rel in sorted(exclude_paths(str(ROOT), _dockerignore(), dockerfile=dockerfile)):
            rel = rel.replace(os.sep, "/")
            if (rel.startswith(BUILD_INPUTS_DIR + "/")
                    and rel.rsplit("/", 1)[-1] not in ("README.md", ".gitignore")):
                continue
            if any(rel == folder or rel.startswith(folder + "/") for folder in placed):
                continue
            tar.add(str(ROOT / rel), arcname=rel, recursive=False)
        for folder, host in step.context_dirs:
            for name, source in _folder_entries(folder, host, dockerfile):
                tar.add(str(source), arcname=name, recursive=False)
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
    (``BuildStep.inputs``: ``inputs``, the host's mmcv wheel with ``host_mmcv``) or with a
    ZOO_MODEL_DIRS model's folder (``BuildStep.context_dirs``: its own build and the core's) is
    sent a context made here (``context_archive``): the same files plus those, which are in no
    folder of the repo.
    """
    steps = prepare_build(model, tag, git_commit, base_image, inputs, host_mmcv)
    if host_mmcv and any(s.dockerfile == ROOT / SHARED_IMAGES["ZOO_MMCV"][0] for s in steps):
        log(host_mmcv_wheel(model)[1])
    client = connect()
    for index, step in enumerate(steps):
        dockerfile = step.context_dockerfile
        try:
            labels = {INPUTS_LABEL: describe_inputs(step.inputs)} if step.inputs else {}
            if (not rebuild and index < len(steps) - 1
                    and image_store.reusable(client, step.tag, from_image(step), labels)):
                log(f"==> {step.tag} ({dockerfile}): here already, on its current base"
                    f"{' and inputs' if labels else ''}: not built again")
                continue
            log(f"==> {step.tag} ({dockerfile})")
            if step.inputs or step.context_dirs:
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
    client = connect()
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
