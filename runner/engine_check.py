"""``invoke engine-check``: the zoo's images end to end on a real Docker engine (issue 14, item 2).

``main(names, ...)`` installs docker.io where it is missing and starts dockerd (as root; stopped
at the end: only a daemon this check started), removes the zoo's superseded images
(``prune_images``), makes the local base image, builds each model's image, every step (not started
with less than ``ENGINE_BUILD_NEED_GB`` free on the engine's data root), removes what it replaced,
runs its main job with ``--docker``, validates the record on the host, builds the first model
again (only its core may be built) and runs the engine tests; every step timed, a summary table
at the end. Its exit codes (``invoke.Exit``): 1 a step failed, ``ENGINE_UNAVAILABLE`` (3) no
engine can be reached, installed or started, ``ENGINE_NO_DISK`` (4) nothing failed but a build
was not tried for want of disk. The steps are the zoo's own commands (``python -m invoke build``,
``run --docker``, ``pytest -m engine``), run as child processes.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from invoke import Exit

from runner import ROOT, engine, envs, image_store
from runner.docker_errors import DockerError
from runner.validate import ResultError, load_result

ENGINE_WORK = ROOT / "work" / "engine-check"
ENGINE_UNAVAILABLE = 3  # engine-check's exit code when no engine can be reached, installed or started
ENGINE_NO_DISK = 4  # engine-check's exit code when nothing failed but a build was not tried for want of disk
# Free space on the engine's data root below which engine-check does not start a model's build (it
# would fail in the middle: "no space left on device"): the install stage and its copy into the
# image are both on disk until the build ends (2 x the environment), with the context beside them:
# fcn8s's cold build (zoo/mmcv included) took 7.4 GB at its peak here (2026-11-28).
ENGINE_BUILD_NEED_GB = 8.0
ENGINE_BUILT_ENV = "ZOO_ENGINE_BUILT"  # engine-check tells its tests which model images it built just now
ENGINE_PACKAGES = (("dockerd", "docker.io"), ("debootstrap", "debootstrap"))  # (command, Debian package)


class _Steps:
    """Named steps, each timed; a failed step is recorded with its one-line reason and the
    check goes on with the steps that do not depend on it; ``summary`` prints the table."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, str]] = []

    def run(self, name: str, fn, *args) -> bool:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            outcome = fn(*args)
            status = "ok" if outcome is None or outcome is True else f"FAILED: {outcome}"
        except (Exit, OSError, subprocess.SubprocessError, DockerError, ResultError) as exc:
            status = f"FAILED: {getattr(exc, 'message', None) or exc}"
        self.rows.append((name, time.monotonic() - started, " ".join(str(status).split())[:200]))
        print(f"   {name}: {self.rows[-1][2]} ({self.rows[-1][1]:.0f} s)", flush=True)
        return status == "ok"

    def skip(self, name: str, reason: str) -> None:
        self.rows.append((name, 0.0, f"skipped: {reason}"))
        print(f"== {name}: skipped: {reason}", flush=True)

    def summary(self) -> bool:
        width = max(len(name) for name, _, _ in self.rows)
        print("\nengine-check summary")
        for name, seconds, status in self.rows:
            print(f"  {name:<{width}}  {seconds:7.1f} s  {status}")
        print(f"  {'total':<{width}}  {sum(s for _, s, _ in self.rows):7.1f} s")
        return all(not status.startswith("FAILED") for _, _, status in self.rows)


def _call(argv: list[str], **kw) -> str | None:
    """Run a command (output through); None if it succeeded, else a one-line reason."""
    rc = subprocess.call(argv, cwd=ROOT, **kw)
    return None if rc == 0 else f"{' '.join(argv[:4])} ... exited {rc}"


def _engine_weights(model: str, steps: "_Steps") -> list[str] | None:
    """The --weights words of a model's check run: none when its default checkpoint ships with
    the repository (UNet++'s trained file), else a random-weight checkpoint made once in the
    model's own environment (benchmarks/random_weights.py; the official files cannot be fetched
    here): the check proves the image end to end, not its accuracy. None when it cannot be made."""
    from zoo.manifest import load_manifest
    manifest = load_manifest(model)
    default = manifest.weights["checkpoints"][manifest.weights["default"]]
    if default.get("path") and (manifest.dir / default["path"]).is_file():
        return []
    path = ENGINE_WORK / "weights" / f"{model}_random.pth"
    def make() -> str | None:
        try:
            python = envs.ensure(model)
        except envs.EnvError as exc:
            return str(exc)
        path.parent.mkdir(parents=True, exist_ok=True)
        return _call([str(python), str(ROOT / "benchmarks" / "random_weights.py"), model, str(path)])

    if not path.is_file() and not steps.run(f"random-weight checkpoint for {model}", make):
        return None
    return ["--weights", str(path)]


def _install_engine() -> str | None:
    """apt-get install the missing ENGINE_PACKAGES; a policy-rc.d (only if there is none, removed
    after) keeps their postinst from starting a service: this check starts the daemon itself."""
    missing = [pkg for command, pkg in ENGINE_PACKAGES if shutil.which(command) is None]
    if not missing:
        return None
    policy = Path("/usr/sbin/policy-rc.d")
    made = not policy.exists()
    if made:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        return (_call(["apt-get", "update", "-q"], env=env)
                or _call(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env))
    finally:
        if made:
            policy.unlink()


def _start_engine(started: list) -> str | None:
    """Start dockerd (its log: work/engine-check/dockerd.log) and wait for it to answer (60 s);
    the process is appended to ``started`` so that the check stops it, and only it."""
    ENGINE_WORK.mkdir(parents=True, exist_ok=True)
    log = open(ENGINE_WORK / "dockerd.log", "ab")
    proc = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    started.append(proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (ENGINE_WORK / "dockerd.log").read_text(errors="replace").strip().splitlines()[-1:]
            return f"dockerd exited {proc.returncode}: {tail[0] if tail else 'no output'}"
        if engine.reachable():
            return None
        time.sleep(1)
    return "dockerd did not answer within 60 s (work/engine-check/dockerd.log)"


def _stop_engine(proc: subprocess.Popen) -> str | None:
    """SIGTERM the dockerd this check started (its containers stop with it), then wait."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "dockerd did not stop within 60 s: killed"
    return None


def prune_images(dry_run: bool = False, indent: str = "   ") -> str | None:
    """runner/image_store.prune on the engine (``invoke prune-images``, and this check's steps): the
    zoo's superseded images, a line each, then how many were removed and (a local engine) the space
    freed."""
    client = engine.connect(hint="images are pruned on a running engine (invoke engine-check installs and starts one)")
    with engine.sdk_calls("pruning the zoo's images"):
        removed, gained = image_store.prune(client, dry_run=dry_run,
                                            log=lambda line: print(f"{indent}{line}", flush=True))
    if not dry_run:
        freed = "" if gained is None else f", {gained / image_store.GB:.1f} GB freed"
        print(f"{indent}{removed} image(s) removed{freed}", flush=True)
    return None


def _rebuild_reuses(argv: list[str]) -> str | None:
    """Run ``invoke build`` again (output through); a reason unless every build but the last (the
    core) said it reused the image here."""
    proc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        return f"{' '.join(argv[:4])} ... exited {proc.returncode}"
    starts = [line for line in proc.stdout.splitlines() if line.startswith("==> ")]
    built = [line for line in starts[:-1] if not line.endswith("not built again")]
    return f"built again though here: {'; '.join(built)}" if built or not starts else None


def _disk_short(need_gb: float) -> str | None:
    """Why a build should not start (the engine's data root has less than ``need_gb`` free), else
    None (enough, or not known: a remote engine)."""
    try:
        client = engine.connect()
    except DockerError:
        return None  # the build step says it
    free = image_store.free_bytes(client)
    if free is None or free >= need_gb * image_store.GB:
        return None
    return (f"only {free / image_store.GB:.1f} GB free in {image_store.data_root(client)} (the engine's data root), "
            f"a build needs about {need_gb:.0f} GB: not built (free space, or `invoke prune-images`)")


def _check_results(folder: Path) -> str | None:
    """The run's record on the host: valid against the schema, written in a container, every
    batch size measured."""
    records = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not records:
        return f"no result JSON in {folder}"
    rec = load_result(records[-1])
    if not rec["environment"]["in_container"]:
        return f"{records[-1]}: not recorded as run in a container"
    failed = [p["batch_size"] for p in rec["perf"] if p["status"] != "ok"]
    return f"{records[-1]}: batch size(s) {failed} failed" if failed else None


def main(names: list[str], *, base_image: str = "local", pip_config: str | None = None,
         ca_bundle: str | None = None, wheels: str | None = None, mirror: str | None = None,
         no_tests: bool = False, keep_images: bool = False) -> None:
    """The check of the images of ``names`` (known models, checked by the caller), as the module
    docstring says; ``base_image``, ``pip_config``, ``ca_bundle``, ``wheels`` and ``mirror`` go to
    ``invoke build`` / ``invoke base-image``, ``keep_images`` skips the prunes, ``no_tests`` the
    engine tests. Returns when every step passed; else raises ``invoke.Exit`` (1, 3 or 4)."""
    steps, started = _Steps(), []
    if not engine.reachable():  # no engine to check: exit 3 (CI tells it apart from a failed check)
        if os.geteuid() != 0:
            raise Exit("error: no Docker daemon reachable, and installing/starting one needs root",
                       code=ENGINE_UNAVAILABLE)
        if not (steps.run("install docker.io (if missing)", _install_engine)
                and steps.run("start dockerd", _start_engine, started)):
            steps.summary()
            raise Exit(code=ENGINE_UNAVAILABLE)
    else:
        print("== a Docker daemon is already running: used, and left running", flush=True)
    no_disk = False
    try:
        if keep_images:
            steps.skip("remove the zoo's superseded images", "--keep-images")
        else:
            steps.run("remove the zoo's superseded images", prune_images)
        if base_image == "local":
            steps.run("local base image (runner/base_image.sh)", _call, [
                sys.executable, "-m", "invoke", "base-image", *(["--ca-bundle", ca_bundle] if ca_bundle else []),
                *(["--mirror", mirror] if mirror else [])])
        out = ENGINE_WORK / "results"
        build_opts = [*(["--pip-config", pip_config] if pip_config else []),
                      *(["--ca-bundle", ca_bundle] if ca_bundle else []), *(["--wheels", wheels] if wheels else [])]
        built = []  # the images this check built from the current tree and inputs (the engine tests' subject)
        for m in names:
            short = _disk_short(ENGINE_BUILD_NEED_GB)
            if short:
                no_disk = True
                steps.skip(f"build {m}", short)
                steps.skip(f"run {m} --docker", "not built")
                continue
            # --rebuild: the check builds every step from this tree (images already here from an
            # earlier build would otherwise be reused, and their build not checked)
            if not steps.run(f"build {m}", _call, [sys.executable, "-m", "invoke", "build", "--model", m,
                                                   "--base-image", base_image, "--rebuild", *build_opts]):
                steps.skip(f"run {m} --docker", "its build failed")
                continue
            built.append(m)
            if not keep_images:  # what this build replaced (the images of an earlier build)
                steps.run(f"remove what the {m} build replaced", prune_images)
            weights = _engine_weights(m, steps)
            if weights is None:
                steps.skip(f"run {m} --docker", "no checkpoint to run it with")
                continue
            if steps.run(f"run {m} --docker", _call, [sys.executable, "-m", "invoke", "run", "--model", m,
                                                      "--docker", "--out", str(out), *weights]):
                steps.run(f"validate {m}'s record on the host", _check_results, out / m)
        if built:  # a build again from the same tree and inputs: only the core is built
            steps.run(f"build {built[0]} again (only its core)", _rebuild_reuses, [
                sys.executable, "-m", "invoke", "build", "--model", built[0], "--base-image", base_image, *build_opts])
        if no_tests:
            steps.skip("engine tests", "--no-tests")
        else:
            steps.run("engine tests (pytest -m engine tests/runner)", functools.partial(
                _call, env={**os.environ, ENGINE_BUILT_ENV: ",".join(built), "ZOO_ENGINE_BASE": base_image}),
                [sys.executable, "-m", "pytest", "-q", "-m", "engine", "tests/runner"])
    finally:
        for proc in started:
            steps.run("stop the dockerd this check started", _stop_engine, proc)
    if not steps.summary():
        raise Exit(code=1)
    if no_disk:
        print(f"engine-check: a build was not tried for want of disk (exit {ENGINE_NO_DISK})", file=sys.stderr)
        raise Exit(code=ENGINE_NO_DISK)
