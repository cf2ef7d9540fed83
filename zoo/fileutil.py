"""Checksums, atomic writes, and never-overwriting writes of new files."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Callable


def file_digest(path: Path, algo: str = "sha256", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def umask() -> int:
    """The process's umask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_file_beside(final: Path, suffix: str = ".tmp") -> Path:
    """A new empty file `.<name>.<pid>-<random><suffix>` in final's parent (same file system, so it
    can be renamed or linked into place), with the permissions a plain open() would give (not
    mkstemp's 0600)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}-", suffix=suffix, dir=final.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
    finally:
        os.close(fd)
    return Path(tmp)


def _temp_with(path: Path, data: bytes) -> Path:
    """A synced temporary file beside path holding data."""
    tmp = temp_file_beside(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A reader never sees a half-written file, and an interrupted write leaves no file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_with(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def create_new_bytes(path: Path, data: bytes) -> None:
    """Write a NEW file atomically: a temporary file in the same folder, then os.link to `path`,
    which fails with FileExistsError when `path` exists (an existing file is never replaced).
    On a file system without hard links: `path` is claimed with O_EXCL, then replaced by the
    complete temporary file (still never another writer's file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_with(path, data)
    try:
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # FileExistsError if taken
            os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def create_unique_text(folder: Path, stem: str, render: Callable[[str, Path], str], suffix: str = ".json",
                       attempts: int = 20) -> Path:
    """Write a new file `folder/<stem>-<6 hex><suffix>` and return its path; never overwrites: on a
    name collision another random part is chosen. `render(name, path)` gives the text for the
    chosen name (e.g. a record whose id is the name, validated against `path`)."""
    folder = Path(folder)
    for _ in range(attempts):
        name = f"{stem}-{secrets.token_hex(3)}"
        path = folder / f"{name}{suffix}"
        if path.exists():
            continue
        try:
            create_new_bytes(path, render(name, path).encode())
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free name for {stem}-*{suffix} after {attempts} attempts")


def create_unique_json(folder: Path, record: dict, key: str = "run_id", validate=None) -> Path:
    """Write `record` as a new `folder/<record[key]>-<6 hex>.json`, never over another file; the
    chosen name is stored in record[key] (so a record's id names its file), and
    `validate(record, path)` runs on the final record before anything is written."""
    stem = record[key]

    def render(name: str, path: Path) -> str:
        record[key] = name
        if validate is not None:
            validate(record, str(path))
        return json.dumps(record, indent=1, allow_nan=False) + "\n"  # strict JSON, never a bare NaN

    return create_unique_text(folder, stem, render)


def read_json(path: Path, what: str, missing: str = "not found"):
    """A JSON file's value; a missing or unreadable one (a folder, not JSON, nested too deeply for
    the parser) is a one-line ZooError naming it."""
    from zoo.errors import ZooError
    from zoo.ids import shown
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ZooError(f"{shown(path)}: {what} {missing}") from None
    except IsADirectoryError:
        raise ZooError(f"{shown(path)}: unreadable {what} (a folder, not a file)") from None
    except (OSError, ValueError) as exc:
        raise ZooError(f"{shown(path)}: unreadable {what} ({getattr(exc, 'strerror', None) or exc})") from None
    except RecursionError:
        raise ZooError(f"{shown(path)}: unreadable {what} (JSON nested too deeply)") from None


def check_writable_dir(folder: Path, what: str) -> None:
    """Create `folder` (and its parents) if needed and prove a file can be created in it, before
    any work: an impossible or unwritable output folder fails in one line at the start, not after
    the run. `what` names the folder in the message ("results folder", ...)."""
    from zoo.errors import ZooError
    from zoo.ids import shown
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ZooError(f"{shown(folder)}: the {what} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ZooError(f"{shown(folder)}: cannot create the {what} ({exc.strerror or exc})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".zoo-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ZooError(f"{shown(folder)}: cannot write into the {what} ({exc.strerror or exc})") from None
