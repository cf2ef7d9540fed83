"""Assertions shared by the models' bad-input tests."""
from __future__ import annotations

from pathlib import Path


def result_files(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if p.is_file()]


def assert_clean_failure(proc, out, *needles, code=2) -> str:
    """A failed CLI run: exit `code`, last stderr line `error: ...` containing every needle,
    no traceback, and no (partial) result file under `out`. Returns that line."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert str(n) in last, (n, last)
    assert result_files(out) == [], "no (partial) result may be written"
    return last
