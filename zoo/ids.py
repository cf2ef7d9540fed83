"""Id lists (split files, evaluation orders): one id a line, order kept, duplicates refused."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from zoo.errors import ZooError


def read_ids(path: Path, normalize: Callable[[str], str] | None = None) -> list[str]:
    """Non-blank, non-`#` lines of path, stripped and passed through `normalize`; a missing or
    empty file, or an id listed twice, is a one-line ZooError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"{path}: ids file not found")
    ids = [line.strip() for line in path.read_text().splitlines()]
    ids = [normalize(i) if normalize else i for i in ids if i and not i.startswith("#")]
    if not ids:
        raise ZooError(f"{path}: ids file is empty")
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ZooError(f"{path}: duplicate ids, e.g. {i}")
        seen.add(i)
    return ids
