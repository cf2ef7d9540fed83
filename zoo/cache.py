"""Cache entries that concurrent runs build once, publish atomically and verify before every use.

An entry is a folder (`cache/export/<key>/`, `cache/compiled/onnxruntime/<key>/`, a prepared
dataset). `ensure_entry(entry, build)`:

  - reuses the entry when its sidecar `.zoo-entry.json` (written last: every file's relative path,
    size and sha256) matches the files, and an optional `verify(entry)` passes;
  - otherwise takes the entry's lock (`fcntl.flock` on `<entry>.lock` beside it; a run that has to
    wait says so once on stderr), checks again (another run may just have built it), and builds it
    into a unique temporary folder beside it (`.<name>.<pid>-<random>.tmp`), writes the sidecar and
    publishes the folder with one rename. A damaged or sidecar-less entry is rebuilt with a one-line
    warning on stderr;
  - removes its temporary folder on any exception, KeyboardInterrupt and SystemExit included. A
    builder killed outright leaves its temporary folder: the next builder removes it while holding
    the lock (no other process can be building that entry then, so every temporary folder of the
    entry is abandoned).

The lock file exists only while someone builds or waits: the holder unlinks it before releasing,
and a waiter that then holds a lock on an unlinked file notices (the path no longer names the
inode it locked) and locks again.

`read_entry_file(entry, name)` reads a file of an entry and checks the bytes read against the
sidecar, for a caller that loads from memory (OpenVINO's import_model). `sealed_folder(folder)` is
for a folder a third-party tool writes and reads itself (TensorRT's engines, atc's .om files):
checked against its seal under the lock before the tool uses it, sealed after (see below)."""
from __future__ import annotations

import errno
import hashlib
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from zoo.errors import ZooError, one_line
from zoo.fileutil import file_digest, temp_file_beside, umask

SIDECAR = ".zoo-entry.json"
SIDECAR_VERSION = 1
MISSING = "missing"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- temporary names beside a final path -------------------------------------------------------

def _temp_pattern(name: str) -> re.Pattern:
    # mkdtemp/mkstemp's random part is [a-z0-9_]; the pid tells which process made it
    return re.compile(rf"^\.{re.escape(name)}\.(\d+)-[a-z0-9_]+(\.old)?\.tmp$")


def temp_dir_beside(final: Path) -> Path:
    """A new empty folder `.<name>.<pid>-<random>.tmp` in final's parent (same file system, so it
    can be renamed into place), with the permissions a plain mkdir would give."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}-", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~umask())
    return tmp


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _remove_while_unwinding(path: Path) -> None:
    """Remove a temporary folder/file on the way out of a failed or interrupted build: a second
    Ctrl-C (or SIGTERM turned into an exception) during the removal does not cut it short, and a
    write that races the removal (a worker thread finishing its item) gets one more pass."""
    for _ in range(3):
        try:
            _remove(path)
            if not (path.exists() or path.is_symlink()):
                return
        except BaseException:  # noqa: BLE001  the exception being unwound is re-raised by the caller
            pass


def stale_temps(final: Path) -> list[Path]:
    """The temporary folders/files of `final` left in its parent (by this naming scheme)."""
    final = Path(final)
    pat = _temp_pattern(final.name)
    try:
        names = os.listdir(final.parent)
    except FileNotFoundError:
        return []
    return [final.parent / n for n in names if pat.match(n)]


def publish_file(final: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` writes the file under a unique temporary name beside `final`; it is then
    renamed over `final` (atomic). The temporary file is removed on any exception."""
    tmp = temp_file_beside(final)
    try:
        write(tmp)
        os.replace(tmp, final)
    except BaseException:
        _remove_while_unwinding(tmp)
        raise


def publish_dir(tmp: Path, final: Path) -> None:
    """Rename the finished folder `tmp` to `final`, which must not exist (or be an empty folder);
    a non-empty `final` is a ZooError and `tmp` is left to the caller."""
    try:
        os.rename(tmp, final)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise ZooError(f"{final}: already exists (refusing to mix with other files)") from None
        raise


# --- the sidecar -------------------------------------------------------------------------------

def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != SIDECAR)


def write_sidecar(folder: Path) -> dict:
    """Describe every file of `folder` (relative path, size, sha256) in `folder/.zoo-entry.json`."""
    folder = Path(folder)
    desc = {"version": SIDECAR_VERSION,
            "files": [{"path": p.relative_to(folder).as_posix(), "size": p.stat().st_size, "sha256": file_digest(p)}
                      for p in _files(folder)]}
    side = folder / SIDECAR
    with open(side, "w") as f:
        json.dump(desc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    return desc


def _file_problem(folder: Path, f: dict) -> str | None:
    """None when the file a sidecar describes (`f`: path, size, sha256) matches, else what differs."""
    try:
        rel, size, digest = f["path"], f["size"], f["sha256"]
        p = folder / rel
        if not p.is_file():
            return f"{rel} missing"
        actual = p.stat().st_size
        if actual != size:
            return f"{rel} is {actual} bytes, expected {size}"
        if file_digest(p) != digest:
            return f"{rel} content differs from its sha256"
    except (KeyError, TypeError, AttributeError) as exc:
        return f"{SIDECAR} unreadable: {one_line(exc)[:120]}"
    except OSError as exc:
        return f"cannot read {f.get('path')}: {one_line(exc)[:120]}"
    return None


def _listed(folder: Path, empty_ok: bool) -> list | str:
    """The files the folder's sidecar lists, or what is wrong with the sidecar (one line);
    FileNotFoundError when it has none. `empty_ok`: a sealed folder may hold no file."""
    try:
        desc = json.loads((Path(folder) / SIDECAR).read_text())
        files = desc["files"]
        if desc.get("version") != SIDECAR_VERSION or not isinstance(files, list) or not (files or empty_ok):
            return f"{SIDECAR} has an unknown layout"
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{SIDECAR} unreadable: {one_line(exc)[:120]}"
    return files


def damage(entry: Path, verify: Callable[[Path], None] | None = None) -> str | None:
    """None when `entry` matches its sidecar (and `verify(entry)` passes), else what is wrong:
    MISSING when there is no entry at all."""
    entry = Path(entry)
    if not entry.exists() and not entry.is_symlink():
        return MISSING
    if not entry.is_dir():
        return "not a folder"
    try:
        files = _listed(entry, empty_ok=False)
    except FileNotFoundError:
        return f"no {SIDECAR}"
    if isinstance(files, str):
        return files
    for f in files:
        problem = _file_problem(entry, f)
        if problem:
            return problem
    if verify is not None:
        try:
            verify(entry)
        except ZooError as exc:
            return one_line(exc)[:300]
    return None


# --- the lock ----------------------------------------------------------------------------------

def lock_path(entry: Path) -> Path:
    entry = Path(entry)
    return entry.with_name(entry.name + ".lock")


@contextmanager
def entry_lock(entry: Path, wait_message: bool = True) -> Iterator[bool]:
    """Hold the exclusive lock of `entry` (flock on `<entry>.lock`); yields whether it had to wait.
    Prints "waiting for <entry> (being built by another run)" once when another process holds it."""
    path = lock_path(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if wait_message and not waited:
                    _log(f"waiting for {entry} (being built by another run)")
                waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                st = os.stat(path)
                current = os.fstat(fd)
                same = (st.st_ino, st.st_dev) == (current.st_ino, current.st_dev)
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # the holder unlinked the file we locked: lock the current one
    try:
        yield waited
    finally:
        try:
            os.unlink(path)  # still holding it: waiters on this inode will retry on a new file
        except FileNotFoundError:
            pass
        os.close(fd)


@contextmanager
def try_entry_lock(entry: Path) -> Iterator[bool]:
    """The entry's lock if it is free right now (yields True), else yields False without waiting."""
    path = lock_path(entry)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield False
        return
    held = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            st, cur = os.stat(path), os.fstat(fd)
            held = (st.st_ino, st.st_dev) == (cur.st_ino, cur.st_dev)
        except (BlockingIOError, FileNotFoundError):
            held = False
        yield held
    finally:
        if held:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        os.close(fd)


# --- the entry ---------------------------------------------------------------------------------

def clean_stale(entry: Path) -> list[Path]:
    """Remove the entry's abandoned temporary folders. Call only while holding the entry's lock
    (then no process is building this entry, so every temporary folder of it is abandoned). The
    fixed name `<entry>.tmp` of zoo versions before zoo.cache is removed too."""
    gone = stale_temps(entry)
    legacy = entry.with_name(entry.name + ".tmp")
    if legacy.is_dir() and not legacy.is_symlink():
        gone.append(legacy)
    for p in gone:
        _remove(p)
    return gone


def _build_and_publish(entry: Path, build: Callable[[Path], None], verify: Callable[[Path], None] | None) -> None:
    tmp = temp_dir_beside(entry)
    try:
        build(tmp)
        if verify is not None:
            verify(tmp)  # a build that cannot be used is not published
        write_sidecar(tmp)
        if entry.exists() or entry.is_symlink():  # a damaged entry: move it aside, then swap
            old = entry.with_name(f".{entry.name}.{os.getpid()}-{os.urandom(4).hex()}.old.tmp")
            os.rename(entry, old)
            os.rename(tmp, entry)
            _remove(old)
        else:
            os.rename(tmp, entry)
    except BaseException:
        _remove_while_unwinding(tmp)
        raise


def ensure_entry(entry: Path, build: Callable[[Path], None],
                 verify: Callable[[Path], None] | None = None) -> bool:
    """Make sure the cache entry folder `entry` exists and is intact; True when an existing entry
    is reused, False when it was built now by `build(tmp)` (which fills the empty folder `tmp`;
    it may raise, and nothing is published then). `verify(folder)` is an extra check of a cached
    entry, and of a new one before it is published, that raises ZooError when it cannot be used."""
    entry = Path(entry)
    if damage(entry, verify) is None:
        if stale_temps(entry):  # a killed replacement left its old copy: clean it if no one builds
            with try_entry_lock(entry) as held:
                if held:
                    clean_stale(entry)
        return True
    with entry_lock(entry):
        problem = damage(entry, verify)
        if problem is None:
            return True  # built by the run we waited for
        clean_stale(entry)
        if problem != MISSING:
            _log(f"warning: cache entry {entry} is damaged ({problem}); rebuilding")
        _build_and_publish(entry, build, verify)
    return False


def read_entry_file(entry: Path, rel: str) -> bytes:
    """The bytes of `entry/rel`, checked against the entry's sidecar after reading them: what a
    caller loads from memory is exactly what the sidecar vouches for, even if the file changed
    after ensure_entry checked it. A mismatch is a ZooError naming the file."""
    entry = Path(entry)
    try:
        want = {f["path"]: f for f in json.loads((entry / SIDECAR).read_text())["files"]}[rel]
        data = (entry / rel).read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ZooError(f"{entry / rel}: cannot read it with its {SIDECAR} ({one_line(exc)[:160]})") from None
    if len(data) != want.get("size") or hashlib.sha256(data).hexdigest() != want.get("sha256"):
        raise ZooError(f"{entry / rel}: changed after it was checked (another process is writing the cache?)")
    return data


# --- sealed folders: written and read by a third-party tool ------------------------------------
#
# Some tools keep their own cache in a folder we name (TensorRT's engine cache, written by ONNX
# Runtime's TensorRT execution provider; Ascend's .om files, written by atc) and read it back
# themselves, so it cannot be built into a temporary folder and published. `sealed_folder(folder)`
# holds the folder's lock around the tool's use: before it, every file must be the one its seal
# (the same `.zoo-entry.json` sidecar) describes -- otherwise all the folder's files are removed
# with a one-line warning and the tool rebuilds them --, and after it the seal describes the
# folder's files again. A file the tool left half-written (killed, failed) is unsealed, so its
# next use removes it rather than trusting it.

def seal_problem(folder: Path) -> str | None:
    """None when every file of `folder` matches its seal (an empty folder without a seal too),
    else what differs (the first difference)."""
    folder = Path(folder)
    present = [p.relative_to(folder).as_posix() for p in _files(folder)] if folder.is_dir() else []
    try:
        listed = _listed(folder, empty_ok=True)
    except FileNotFoundError:
        listed = []
    if isinstance(listed, str):
        return listed
    try:
        known = {f["path"] for f in listed}
    except (KeyError, TypeError) as exc:
        return f"{SIDECAR} unreadable: {one_line(exc)[:120]}"
    for f in listed:
        problem = _file_problem(folder, f)
        if problem:
            return problem
    extra = [rel for rel in present if rel not in known]
    if extra:
        return f"{extra[0]} is not sealed" + (f" (and {len(extra) - 1} more files)" if len(extra) > 1 else "")
    return None


def seal(folder: Path) -> dict:
    """Describe every file of `folder` in its seal, replaced atomically."""
    folder = Path(folder)
    desc = {"version": SIDECAR_VERSION,
            "files": [{"path": p.relative_to(folder).as_posix(), "size": p.stat().st_size, "sha256": file_digest(p)}
                      for p in _files(folder)]}

    def write(tmp: Path) -> None:
        with open(tmp, "w") as f:
            json.dump(desc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
    publish_file(folder / SIDECAR, write)
    return desc


@contextmanager
def sealed_folder(folder: Path) -> Iterator[Path]:
    """Hold `folder`'s lock while a third-party tool reads and writes it: on entry a folder whose
    files differ from its seal is emptied (one-line warning naming the folder and the difference),
    on a normal exit the folder is sealed. An exception leaves it unsealed: what the tool wrote then
    is removed on the next use. Not reentrant (the lock is per open file)."""
    folder = Path(folder)
    with entry_lock(folder):
        folder.mkdir(parents=True, exist_ok=True)
        problem = seal_problem(folder)
        if problem:
            _log(f"warning: {folder}: {problem}; removing its files so that they are rebuilt")
            for p in list(folder.iterdir()):
                _remove(p)
        yield folder
        seal(folder)
