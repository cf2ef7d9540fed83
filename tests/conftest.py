"""Fixtures shared by every model's tests: the real CLI in a subprocess with a session cache.

Host tests (tests/runner) do not use them; nothing here imports torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory) -> Path:
    """One cache per test session: exports/compiles/preparations are shared between tests."""
    return tmp_path_factory.mktemp("zoo-cache")


@pytest.fixture(scope="session")
def run_zoo(zoo_cache):
    """Run the real CLI (`python -m zoo ...`) in a subprocess; returns CompletedProcess."""
    def _run(*args, cache: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        env = {**os.environ, "ZOO_CACHE": str(cache or zoo_cache),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
    return _run


@pytest.fixture
def out(tmp_path) -> Path:
    """An empty results folder for a CLI run (bad-input tests check it stays empty)."""
    d = tmp_path / "results"
    d.mkdir()
    return d
