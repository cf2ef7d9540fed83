"""Regenerate the hash-pinned lock files the environments install from (pip-tools' pip-compile).

    python3 runner/lock.py MODEL [MODEL ...]      MODEL's requirements.txt -> requirements.lock (its folder:
                                                  models/MODEL/ or one of ZOO_MODEL_DIRS, zoo.registry)
    python3 runner/lock.py mmcv-build             runner/mmcv-build/*.in -> *.lock (mmcv's build venv)
    python3 runner/lock.py locktools              runner/locktools.in -> locktools.lock (pip-tools itself)
    options: --upgrade (re-resolve everything to the newest allowed versions; default: keep the
             versions already in the lock and change only what requirements.txt forces),
             --constraint FILE (extra pins for this resolution, e.g. a pip freeze to reproduce)

`requirements.txt` stays the human-edited top level; the lock is its full closure, every line
`name==version` with a `--hash` per published file of that version, setuptools included
(`--allow-unsafe`), installed with `pip install --require-hashes` by `invoke setup`
(runner/envs.py) and the Dockerfiles. pip-tools runs in a throwaway virtual environment installed
with --require-hashes from runner/locktools.lock. The resolution uses this machine's pip
configuration (index, find-links): torch must resolve to the CPU build `torch==2.13.0+cpu`, here the
local wheel of find-links; elsewhere set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
Index and find-links lines are not written into the lock (it names packages and hashes only).
Errors are one line, exit 2.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python3 runner/lock.py): the repository's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner import ROOT  # noqa: E402
from zoo import registry  # noqa: E402
from zoo.errors import ZooError  # noqa: E402

RUNNER = ROOT / "runner"
TOOLS_LOCK = RUNNER / "locktools.lock"
MMCV_BUILD = RUNNER / "mmcv-build"

COMPILE_OPTIONS = ("--generate-hashes", "--allow-unsafe", "--strip-extras", "--no-emit-index-url",
                   "--no-emit-find-links", "--no-emit-trusted-host", "--resolver=backtracking", "--quiet")
# `name==version \` then one or more `--hash=sha256:<64 hex>` continuation lines.
_REQ = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+!_-]*)$")
_HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


class LockError(Exception):
    """One-line failure."""


def canonical_name(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): runs of -_. as one -, lower case."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{normalised name: (version, [sha256 hashes])} of a hash lock; LockError on any line that
    is not a `name==version` pin with at least one sha256 hash (options and markers included)."""
    pins: dict[str, tuple[str, list[str]]] = {}
    logical: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        logical.append(current + line)
        current = ""
    if current:
        logical.append(current.strip())
    for entry in logical:
        req, *hashes = entry.split()
        m = _REQ.match(req)
        if not m:
            raise LockError(f"{path}: {req!r} is not an exact pin (name==version)")
        if not hashes or not all(_HASH.match(h) for h in hashes):
            raise LockError(f"{path}: {req} has no sha256 --hash entries (or a malformed one)")
        name = canonical_name(m.group(1))
        if name in pins:
            raise LockError(f"{path}: {name} is pinned twice")
        pins[name] = (m.group(2), [h.split(":", 1)[1] for h in hashes])
    return pins


def check_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """parse_lock + the zoo's rules: torch, where present, is the CPU build (+cpu)."""
    pins = parse_lock(path)
    if "torch" in pins and not pins["torch"][0].endswith("+cpu"):
        raise LockError(f"{path}: torch=={pins['torch'][0]} is not the CPU build (+cpu): "
                        "the index served another variant; check pip's find-links/extra-index-url")
    return pins


def _targets(names: list[str]) -> list[tuple[Path, Path, str]]:
    """(input, lock, display name) per requested target."""
    out = []
    for name in names:
        if name == "locktools":
            out.append((RUNNER / "locktools.in", TOOLS_LOCK, name))
        elif name == "mmcv-build":
            for stem in ("requirements", "setuptools"):
                out.append((MMCV_BUILD / f"{stem}.in", MMCV_BUILD / f"{stem}.lock", name))
        else:
            try:
                models = registry.discover()
            except ZooError as exc:  # a name defined twice
                raise LockError(str(exc)) from None
            if name not in models:
                raise LockError(f"unknown lock target {name!r} (models: {', '.join(models)}; or mmcv-build, locktools)")
            out.append((models[name].requirements, models[name].lock, name))
    for src, _, _ in out:
        if not src.is_file():
            raise LockError(f"{src}: missing")
    return out


def _shown(path: Path) -> str:
    """A path as the messages show it: relative to the repository when inside it (a model of
    ZOO_MODEL_DIRS: absolute)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _run(cmd: list[str], what: str, **kw) -> None:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        lines = [l for l in (proc.stderr + proc.stdout).splitlines()
                 if l.strip() and "is ignored: it is neither a file nor a directory" not in l]
        raise LockError(f"{what} failed (exit {proc.returncode}): {' '.join(lines[-3:])[-400:]}")


def tools_venv(work: Path) -> Path:
    """A throwaway venv with pip-tools from runner/locktools.lock; returns its pip-compile."""
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", venv], "creating the pip-tools venv")
    _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--require-hashes", "--only-binary", ":all:",
          "-r", TOOLS_LOCK], f"installing {TOOLS_LOCK.relative_to(ROOT)}")
    return venv / "bin" / "pip-compile"


def compile_lock(pip_compile: Path, src: Path, lock: Path, name: str, *, upgrade: bool,
                 constraints: list[Path]) -> None:
    """pip-compile src -> lock (run in src's folder: the lock names its input relatively), atomically."""
    tmp = lock.with_name(f".{lock.name}.tmp")
    if lock.is_file() and not upgrade:
        shutil.copyfile(lock, tmp)  # pip-compile keeps the pins already in its output file
    else:
        tmp.unlink(missing_ok=True)
    cmd = [pip_compile, *COMPILE_OPTIONS, "--output-file", tmp.name, src.name]
    cmd += ["--upgrade"] if upgrade else []
    for c in constraints:
        cmd += ["--constraint", str(c.resolve())]
    env = {**os.environ, "CUSTOM_COMPILE_COMMAND": f"python3 runner/lock.py {name}"}
    try:
        _run(cmd, f"pip-compile {_shown(src)}", cwd=src.parent, env=env)
        text = tmp.read_text().replace(f"--output-file={tmp.name}", f"--output-file={lock.name}")
        tmp.write_text(text)
        check_lock(tmp)
        os.replace(tmp, lock)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runner/lock.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="+", metavar="MODEL|mmcv-build|locktools")
    parser.add_argument("--upgrade", action="store_true", help="re-resolve to the newest allowed versions")
    parser.add_argument("--constraint", action="append", type=Path, default=[], help="extra constraints file")
    args = parser.parse_args(argv)
    try:
        targets = _targets(args.targets)
        for c in args.constraint:
            if not c.is_file():
                raise LockError(f"{c}: constraints file not found")
        with tempfile.TemporaryDirectory(prefix="zoo-lock-") as work:
            pip_compile = tools_venv(Path(work))
            for src, lock, name in targets:
                compile_lock(pip_compile, src, lock, name, upgrade=args.upgrade, constraints=args.constraint)
                print(f"{_shown(lock)}: {len(check_lock(lock))} pinned packages", flush=True)
    except LockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
