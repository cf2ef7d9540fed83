"""zoo.logs: the levels of ZOO_LOG_LEVEL, plain progress lines when stderr is not a terminal (a
start line, at most one line per quarter at least EVERY_S apart, with the ETA), rich bars on a
terminal, and third-party output kept off stdout (which carries the result's path)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo import logs

ROOT = Path(__file__).resolve().parents[2]


class Clock:
    """zoo.logs' clock, moved by hand."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(logs, "_clock", c)
    monkeypatch.delenv(logs.ENV, raising=False)
    logs.configure()
    yield c
    logs.configure()


def _lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_known_total_prints_its_start_then_quarters_with_the_eta(clock, capsys):
    with logs.progress("      bs1 pipeline", 8, "samples") as bar:
        for t, done in ((12, 2), (13, 3), (14, 4), (30, 6), (31, 7), (40, 8)):
            clock.t = 1000 + t
            bar.update(done)
    assert _lines(capsys) == [
        "      bs1 pipeline: 8 samples",
        "      bs1 pipeline: 2/8 samples (25%), 0:00:12 elapsed, ETA 0:00:36",  # 50% came 2 s later: no line
        "      bs1 pipeline: 6/8 samples (75%), 0:00:30 elapsed, ETA 0:00:10",  # and nothing at the end
    ]


def test_a_short_step_shows_only_its_start(clock, capsys):
    with logs.progress("      measuring the fp32 peak", 12, "kernels") as bar:
        for i in range(1, 13):
            clock.t += 0.5
            bar.advance()
    assert _lines(capsys) == ["      measuring the fp32 peak: 12 kernels"]


def test_time_budget_and_bytes_are_worded(clock, capsys):
    with logs.progress("      bs4 infer-only", 10, "s") as bar:
        clock.t += 11
        bar.update(4.6)
    with logs.progress("      downloading w.pth", 80_500_000, "bytes") as bar:
        clock.t += 20
        bar.update(40_250_000)
    assert _lines(capsys) == ["      bs4 infer-only: up to 10 s",
                              "      bs4 infer-only: 5/10 s (46%), 0:00:11 elapsed, ETA 0:00:12",
                              "      downloading w.pth: 80.5 MB",
                              "      downloading w.pth: 40.2/80.5 MB (50%), 0:00:20 elapsed, ETA 0:00:20"]


def test_a_new_pass_counts_again(clock, capsys):
    with logs.progress("      NNCF int8 calibration", 4, "samples") as bar:
        clock.t += 11
        bar.update(2)
        bar.update(0, description="      NNCF int8 calibration, pass 2")
        clock.t += 11
        bar.update(2)
    assert _lines(capsys)[1:] == ["      NNCF int8 calibration: 2/4 samples (50%), 0:00:11 elapsed, ETA 0:00:11",
                                  "      NNCF int8 calibration, pass 2: 2/4 samples (50%), 0:00:11 elapsed, "
                                  "ETA 0:00:11"]


def test_no_total_no_start_line_then_lines_as_its_time_doubles(clock, capsys):
    def wait_for(n: int) -> list[str]:
        deadline = time.monotonic() + 5
        seen = []
        while time.monotonic() < deadline:
            seen += _lines(capsys)
            if len(seen) >= n:
                break
            time.sleep(0.05)
        return seen

    with logs.progress("      compiling for openvino"):
        time.sleep(0.2)
        assert _lines(capsys) == []
        clock.t += 11
        assert wait_for(1) == ["      compiling for openvino: 0:00:11 elapsed"]
        clock.t += 8  # 19 s: the next line is at 20 s
        time.sleep(0.3)
        assert _lines(capsys) == []
        clock.t += 2
        assert wait_for(1) == ["      compiling for openvino: 0:00:21 elapsed"]
    clock.t += 100
    time.sleep(0.3)
    assert _lines(capsys) == []  # closed: nothing more


def _run(code: str, level: str | None = None, **popen) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != logs.ENV}
    if level is not None:
        env[logs.ENV] = level
    return subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, **popen)


LEVELS = """
from zoo import logs
from zoo.stages import log
log("[6/7] inference")
logs.debug("      detail")
logs.warning("warning: something")
with logs.progress("      bs1 pipeline", 4, "samples") as bar:
    bar.advance(4)
print("/result.json")
"""


@pytest.mark.parametrize("level, expected", [
    (None, ["[6/7] inference", "warning: something", "      bs1 pipeline: 4 samples"]),
    ("INFO", ["[6/7] inference", "warning: something", "      bs1 pipeline: 4 samples"]),
    ("debug", ["[6/7] inference", "      detail", "warning: something", "      bs1 pipeline: 4 samples"]),
    ("WARNING", ["warning: something"]),
    ("LOUD", ["warning: ZOO_LOG_LEVEL='LOUD' is not DEBUG, INFO or WARNING; using INFO", "[6/7] inference",
              "warning: something", "      bs1 pipeline: 4 samples"]),
])
def test_zoo_log_level_filters_the_lines(level, expected):
    proc = _run(LEVELS, level)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == expected
    assert proc.stdout == "/result.json\n"  # the result's path alone, whatever the level


def test_third_party_output_is_kept_off_stdout():
    """A library's rich progress on rich's global console (stdout) is dropped by quiet_rich; its
    logger's stdout printer is replaced by zoo lines (DEBUG below WARNING) by routed."""
    code = """
import logging, sys
from rich.progress import track
from zoo import logs
lib = logging.getLogger("somelib")
lib.addHandler(logging.StreamHandler(sys.stdout))
lib.setLevel(logging.INFO)
lib.propagate = False
with logs.quiet_rich(), logs.routed("somelib"):
    for _ in track(range(3), description="Statistics collection"):
        pass
    lib.info("collected")
    lib.warning("odd shapes")
lib.info("after")
"""
    proc = _run(code, "DEBUG")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "after\n"  # the library's own printer is back afterwards
    assert proc.stderr.splitlines() == ["somelib: collected", "somelib: odd shapes"]
    quiet = _run(code, "WARNING")
    assert quiet.stderr.splitlines() == ["somelib: odd shapes"]


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="no pseudo-terminals on this system")
def test_on_a_terminal_rich_draws_bars_with_the_eta_and_lines_above_them():
    code = """
import time
from zoo import logs
with logs.progress("      bs1 pipeline", 8, "samples") as bar:
    for i in range(8):
        time.sleep(0.15)
        bar.advance()
        if i == 3:
            logs.info("      a line while the bar runs")
print("/result.json")
"""
    main, tty = os.openpty()
    try:
        env = {**os.environ, "TERM": "xterm", "COLUMNS": "100"}
        env.pop("NO_COLOR", None)
        proc = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=tty, text=True, timeout=120)
        os.close(tty)
        tty = None
        chunks = []
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if tty is not None:
            os.close(tty)
        os.close(main)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, screen[-2000:]
    assert proc.stdout == "/result.json\n"  # stdout is not a terminal here: never redirected
    assert "bs1 pipeline" in screen and "/8 samples" in screen and "ETA 0:00:0" in screen, screen[-2000:]
    assert "      a line while the bar runs" in screen
    assert "bs1 pipeline: 8 samples" not in screen  # no plain start line on a terminal
