"""Id lists (split files, evaluation orders): one id a line, order kept, duplicates refused; and
the checks every name taken from a dataset goes through (plain names, containment in a root,
printable names)."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from zoo.errors import ZooError


def shown(path) -> str:
    """A path or name as printable text: bytes that are not UTF-8 (held as surrogate escapes in a
    str that came from the file system) become `\\xNN`, so printing a message never fails."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        return text.encode("utf-8", "backslashreplace").decode("ascii")


def is_utf8_name(path) -> bool:
    """False when a file system name holds bytes that are not UTF-8 (surrogate escapes)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def name_problem(name: str) -> str | None:
    """Why `name` cannot be used as a plain file name (one path component), or None."""
    if "\0" in name:
        return "contains a NUL byte"
    if os.path.isabs(name) or name.startswith("\\"):
        return "is an absolute path, not a plain name"
    if "/" in name or "\\" in name:
        return "contains a path separator (an id is a plain name)"
    if name in (".", ".."):
        return "is not a name"
    return None


def path_inside(root: Path, relative: str) -> Path | None:
    """root / relative when that path stays inside root, else None (absolute paths, NUL bytes,
    and `..` components that climb out are refused). The check is on the path as written:
    symbolic links inside the root are followed when the file is opened (a dataset assembled
    from links is legitimate); what is refused is a name in the data that points elsewhere."""
    if not relative or "\0" in relative or os.path.isabs(relative) or relative.startswith("\\"):
        return None
    base = os.path.normpath(os.path.abspath(root))
    target = os.path.normpath(os.path.join(base, relative))
    if target == base or os.path.commonpath([base, target]) != base:
        return None
    return Path(root) / relative


def read_id_lines(path: Path, normalize: Callable[[str], object] | None = None,
                  plain: bool = True) -> list[tuple[int, object]]:
    """(line number, id) for the non-blank, non-`#` lines of path, stripped and passed through
    `normalize` (which may raise ZooError: the message gets the file and line). With `plain`,
    each id must be a plain name (no path separator, NUL byte or absolute path), since ids
    become file names. A missing, unreadable, non-UTF-8 or empty file, a bad entry, or two lines
    giving the same id after normalisation are one-line ZooErrors naming the file and line(s)."""
    path = Path(path)
    where = shown(path)
    if not path.is_file():
        raise ZooError(f"{where}: ids file not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ZooError(f"{where}: cannot read ({exc.strerror})") from None
    out: list[tuple[int, object]] = []
    seen: dict[object, tuple[int, str]] = {}
    for n, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ZooError(f"{where}: line {n}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                           f"{exc.start + 1}); save the ids file as UTF-8") from None
        if n == 1:
            line = line.removeprefix("\ufeff")  # a UTF-8 byte order mark
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "\0" in line:
            raise ZooError(f"{where}: line {n}: contains a NUL byte")
        try:
            ident = normalize(line) if normalize else line
        except ZooError as exc:
            raise ZooError(f"{where}: line {n}: {exc}") from None
        if plain:
            problem = name_problem(str(ident))
            if problem:
                raise ZooError(f"{where}: line {n}: id {str(ident)!r} {problem}")
        if ident in seen:
            first, text = seen[ident]
            same = f"{line!r}" if text == line else f"{line!r} and {text!r} are both {ident}"
            raise ZooError(f"{where}: duplicate ids: lines {first} and {n} ({same})")
        seen[ident] = (n, line)
        out.append((n, ident))
    if not out:
        raise ZooError(f"{where}: ids file is empty")
    return out


def read_ids(path: Path, normalize: Callable[[str], object] | None = None, plain: bool = True) -> list:
    """The ids of read_id_lines, in file order."""
    return [ident for _, ident in read_id_lines(path, normalize, plain)]
