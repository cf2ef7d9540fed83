"""Status lines and progress of the zoo's processes, on stderr (stdout carries the result's path).

Lines go through the `zoo` logger (logging), at the level ZOO_LOG_LEVEL names: DEBUG, INFO
(default) or WARNING (`-q` sets WARNING: progress and status lines hidden, warnings and errors
kept; `-v` sets DEBUG: detail lines shown too). configure() sets it up; info(), debug(),
warning() and progress() call it on first use, so nothing else has to.

How a line looks depends on where stderr goes, checked at each line (pytest and tools swap it):
- a terminal: rich draws the lines (warnings in yellow) and the progress bars, which stay at the
  bottom while lines scroll above them and vanish when their step ends;
- anything else (a pipe, a file, CI): one plain line per record, the text as logged, so tests
  and logs read the same words. A progress then prints its start line and at most one line at
  25, 50 and 75% (each at least EVERY_S after the previous one, with done/total and the ETA), and
  nothing more: a step shorter than EVERY_S shows only its start. A progress without a total
  prints no start line (the step's own header is its start) and a line when it has run EVERY_S,
  then each time its run time doubles.

progress(description, total=None, unit="") is a context manager giving an object with
advance(n=1) and update(completed=None, total=None, description=None) (start() gives the same
object without the `with`: close() ends it). `unit` is shown after the
counts ("samples", "kernels"); "bytes" counts are shown in MB, "s" is a time budget (completed =
seconds spent of at most `total`). Progress bars nest: rich draws them one under the other.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

ENV = "ZOO_LOG_LEVEL"
LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR}
EVERY_S = 10.0  # plain mode: at least this long between two progress lines of one step
REFRESH_PER_S = 4  # rich: redraws a second (low: the bars run while the zoo times the model)
STYLES = {logging.DEBUG: "dim", logging.WARNING: "yellow", logging.ERROR: "bold red", logging.CRITICAL: "bold red"}

logger = logging.getLogger("zoo")
_clock = time.monotonic  # tests replace it
_lock = threading.RLock()
_configured = False
_console = None
_live = None  # the rich Progress drawing every open bar
_open = 0  # bars open in it


# ------------------------------------------------------------------ where the lines go

def _stderr():
    """sys.stderr as the process has it (not the proxy rich puts there while a bar is drawn)."""
    return getattr(sys.stderr, "rich_proxied_file", sys.stderr)


def is_terminal(stream=None) -> bool:
    """Whether `stream` (default stderr) is a terminal rich can draw on."""
    stream = _stderr() if stream is None else stream
    try:
        return bool(stream.isatty()) and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError, OSError):  # no isatty, or closed
        return False


def console():
    """The rich console on stderr that every line and bar of this process draws on."""
    global _console
    if _console is None:
        from rich.console import Console
        _console = Console(stderr=True, highlight=False)
    return _console


class _Handler(logging.Handler):
    """One record, one line on the current stderr: through rich on a terminal, plain otherwise."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            stream = _stderr()
            if is_terminal(stream):
                console().print(msg, markup=False, highlight=False, soft_wrap=True, style=STYLES.get(record.levelno))
            else:
                stream.write(msg + "\n")
                stream.flush()
        except (OSError, ValueError):  # stderr closed or gone (a closed pipe): nothing to tell
            pass


def configure(level: str | None = None) -> int:
    """Set the `zoo` logger's level from `level` or ZOO_LOG_LEVEL (default INFO); the first call
    also installs its handler (stderr, see the module doc). Calling again re-reads the level.
    Returns the level."""
    global _configured
    raw = level if level is not None else os.environ.get(ENV, "")
    name = raw.strip().upper() or "INFO"
    with _lock:
        if not _configured:
            logger.addHandler(_Handler())
            logger.propagate = False  # one line per record, whatever the root logger has
            _configured = True
        logger.setLevel(LEVELS.get(name, logging.INFO))
    if name not in LEVELS:
        logger.warning(f"warning: {ENV}={raw!r} is not DEBUG, INFO or WARNING; using INFO")
    return logger.level


def _ready() -> logging.Logger:
    if not _configured:
        configure()
    return logger


def info(msg: str) -> None:
    _ready().info(msg)


def debug(msg: str) -> None:
    _ready().debug(msg)


def warning(msg: str) -> None:
    _ready().warning(msg)


def error(msg: str) -> None:
    _ready().error(msg)


# ------------------------------------------------------------------ progress

def hms(seconds: float) -> str:
    """'0:01:05'."""
    return str(timedelta(seconds=int(max(seconds, 0))))


def _amount(x: float, unit: str) -> str:
    if unit == "bytes":
        return f"{x / 1e6:.1f}"
    return f"{x:.0f}" if unit == "s" or float(x).is_integer() else f"{x:.1f}"


def counts(done: float, total: float | None, unit: str = "") -> str:
    """'3/8 samples', '12.0/80.5 MB', '3 samples'."""
    shown = "MB" if unit == "bytes" else unit
    text = _amount(done, unit) + (f"/{_amount(total, unit)}" if total is not None else "")
    return f"{text} {shown}".rstrip()


def start_line(description: str, total: float, unit: str = "") -> str:
    """A progress's first plain line: '      bs1 pipeline: 8 samples', '... infer-only: up to 10 s'."""
    if unit == "s":
        return f"{description}: up to {total:g} s"
    return f"{description}: {_amount(total, unit)} {'MB' if unit == 'bytes' else unit}".rstrip()


def eta(elapsed: float, done: float, total: float | None) -> float | None:
    """Seconds left at the mean rate so far (None without a total or any work done)."""
    if total is None or done <= 0:
        return None
    return elapsed * max(total - done, 0) / done


class _Null:
    """A progress that shows nothing (-q, or lines below the level)."""

    def advance(self, n: float = 1) -> None:
        pass

    def update(self, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class _Plain:
    """A progress as a few plain lines (see the module doc)."""

    def __init__(self, description: str, total: float | None, unit: str):
        self.description, self.total, self.unit = description, total, unit
        self.done = 0.0
        self.t0 = self.last = _clock()
        self.quarter = 0
        self.wait = EVERY_S
        self._stop = threading.Event()
        self._thread = None
        if total is not None:
            logger.info(start_line(description, total, unit))
        else:  # no counts to react to: a line after EVERY_S, then each time the run time doubles
            self._thread = threading.Thread(target=self._tick, name="zoo-progress", daemon=True)
            self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(min(max(self.t0 + self.wait - _clock(), 0.05), 1.0)):
            if _clock() - self.t0 >= self.wait:
                self._line()
                self.wait *= 2

    def _line(self) -> None:
        now = _clock()
        elapsed = now - self.t0
        self.last = now
        if self.total is None:
            done = f"{counts(self.done, None, self.unit)}, " if self.done else ""
            logger.info(f"{self.description}: {done}{hms(elapsed)} elapsed")
            return
        left = eta(elapsed, self.done, self.total)
        pct = self.done / self.total if self.total else 1.0
        logger.info(f"{self.description}: {counts(self.done, self.total, self.unit)} ({pct:.0%}), "
                    f"{hms(elapsed)} elapsed" + (f", ETA {hms(left)}" if left is not None else ""))

    def advance(self, n: float = 1) -> None:
        self.update(self.done + n)

    def update(self, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        if description is not None:
            self.description = description
        if total is not None:
            self.total = total
        if completed is None or self.total is None:
            if completed is not None:
                self.done = completed
            return
        if completed == 0 and self.done > 0:  # a new pass: its quarters and rate again
            self.quarter, self.t0 = 0, _clock()
        elif completed < self.done:  # work undone (a retried shard): quarters crossed again are told again
            self.quarter = min(self.quarter, int(4 * completed / self.total) if self.total else 4)
        self.done = completed
        quarter = int(4 * completed / self.total) if self.total else 4
        if quarter > self.quarter:
            self.quarter = quarter
            if quarter < 4 and _clock() - self.last >= EVERY_S:
                self._line()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)


FIGURES_WIDTH = 52  # the columns after a bar's description, at most: spinner, bar, %, counts, elapsed, ETA


def _columns():
    from rich.progress import BarColumn, ProgressColumn, SpinnerColumn, TaskProgressColumn, TimeElapsedColumn
    from rich.table import Column
    from rich.text import Text

    class Description(ProgressColumn):
        """The description, cut (…) to what the terminal leaves beside the figures, never wrapped."""

        def render(self, task):
            text = Text(task.description)
            text.truncate(max(console().width - FIGURES_WIDTH, 10), overflow="ellipsis")
            return text

    class Count(ProgressColumn):
        def render(self, task):
            shown = counts(task.completed, task.total, task.fields.get("unit", ""))
            return Text(shown if task.total is not None or task.completed else "", style="progress.download")

    class Eta(ProgressColumn):
        max_refresh = 0.5

        def render(self, task):
            left = task.time_remaining if task.total is not None and not task.finished else None
            return Text("" if left is None else f"ETA {hms(left)}", style="progress.remaining")

    def fixed():
        return Column(no_wrap=True)

    return (SpinnerColumn(table_column=fixed()), Description(table_column=fixed()),
            BarColumn(bar_width=10, table_column=fixed()), TaskProgressColumn(table_column=fixed()),
            Count(table_column=fixed()), TimeElapsedColumn(table_column=fixed()), Eta(table_column=fixed()))


class _Bar:
    """A task in the process's one rich Progress (started with the first bar, stopped with the last)."""

    def __init__(self, description: str, total: float | None, unit: str):
        global _live, _open
        from rich.progress import Progress
        with _lock:
            if _live is None:
                live = Progress(*_columns(), console=console(), transient=True, refresh_per_second=REFRESH_PER_S,
                                redirect_stdout=is_terminal(sys.stdout), redirect_stderr=True)
                live.start()
                _live = live
            self.live = _live
            self.task = _live.add_task(description.strip(), total=total, unit=unit)
            _open += 1
        self.done = 0.0

    def advance(self, n: float = 1) -> None:
        self.update(self.done + n)

    def update(self, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        kw = {}
        if completed is not None:
            self.done = kw["completed"] = completed
        if total is not None:
            kw["total"] = total
        if description is not None:
            kw["description"] = description.strip()
        self.live.update(self.task, **kw)

    def close(self) -> None:
        global _live, _open
        with _lock:
            self.live.remove_task(self.task)
            _open -= 1
            if _open == 0 and _live is self.live:
                _live = None
                self.live.stop()


def start(description: str, total: float | None = None, unit: str = ""):
    """progress() without the `with`: the caller calls close() when the step ends."""
    if not _ready().isEnabledFor(logging.INFO):
        return _Null()
    if is_terminal():
        return _Bar(description, total, unit)
    return _Plain(description, total, unit)


@contextmanager
def progress(description: str, total: float | None = None, unit: str = ""):
    """A progress of one step (see the module doc): a rich bar with its ETA on a terminal, a few
    plain lines otherwise, nothing when INFO lines are hidden."""
    bar = start(description, total, unit)
    try:
        yield bar
    finally:
        bar.close()


@contextmanager
def quiet_rich():
    """While inside, whatever a library draws on rich's global console (NNCF's progress bars,
    on stdout, which carries the zoo's result path) is dropped: the zoo shows the step itself."""
    import rich
    global_console = rich.get_console()
    was = global_console.quiet
    global_console.quiet = True
    try:
        yield
    finally:
        global_console.quiet = was


@contextmanager
def routed(name: str, level: int = logging.DEBUG):
    """While inside, the records of the library logger `name` (which may print on stdout, as
    NNCF's does) come out as the zoo's lines: below WARNING at `level`, warnings and errors as
    they are, prefixed with the library's name."""
    lib = logging.getLogger(name)
    saved = [h for h in lib.handlers if type(h) is logging.StreamHandler]  # its own stdout/stderr printer only

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            shown = record.levelno if record.levelno >= logging.WARNING else level
            _ready().log(shown, f"{name}: {record.getMessage()}")

    forward = Forward()
    for h in saved:
        lib.removeHandler(h)
    lib.addHandler(forward)
    try:
        yield
    finally:
        lib.removeHandler(forward)
        for h in saved:
            lib.addHandler(h)
