"""Ctrl-C and SIGTERM during a container run (runner.docker.run -> _follow), without a daemon:
a fake container whose output ends when it is sent a signal, as the zoo's does. The same on
the real engine, through `invoke run --docker`: tests/runner/test_docker_confinement.py.

Issue 14, defect 6: Ctrl-C during `invoke run --docker` exited 1 with no message, and SIGTERM
killed invoke and left the container running."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from runner import docker as rd
from runner import engine


class Container:
    """Prints a line, has the process signal itself (as a terminal's Ctrl-C would), and ends
    with the zoo's line and 128 + signal once it is sent that signal (``stubborn``: never)."""

    short_id = "f00d"

    def __init__(self, sig: int, stubborn: bool = False, signals: int = 1):
        self.sig, self.stubborn, self.signals = sig, stubborn, signals
        self.killed: list[str] = []
        self.ended = threading.Event()
        self.code = 0

    def logs(self, stream, follow):
        yield b"[6/7] timing\n"
        time.sleep(0.3)  # the main thread is waiting for this one by now
        for _ in range(self.signals):
            os.kill(os.getpid(), self.sig)
            time.sleep(0.3)
        self.ended.wait(10)
        yield b"error: interrupted; no result written\n"

    def kill(self, signal):
        self.killed.append(signal)
        if not self.stubborn:
            self.code = 128 + getattr(__import__("signal"), signal)
            self.ended.set()

    def wait(self):
        return {"StatusCode": self.code}


@pytest.mark.parametrize("sig,name,code", [(signal.SIGINT, "SIGINT", 130), (signal.SIGTERM, "SIGTERM", 143)])
def test_a_signal_is_forwarded_and_the_container_code_returned(sig, name, code):
    container = Container(sig)
    lines = []
    before = signal.getsignal(signal.SIGTERM)
    assert engine._follow(container, lines.append) == code
    assert container.killed == [name]
    assert lines == ["[6/7] timing", "error: interrupted; no result written"]
    assert signal.getsignal(signal.SIGTERM) is before  # restored


def test_a_container_that_does_not_stop_is_given_up(monkeypatch):
    container = Container(signal.SIGINT, stubborn=True)
    with pytest.raises(rd.Interrupted) as err:
        engine._follow(container, lambda _: None, grace=0.5)
    assert err.value.code == 130 and container.killed == ["SIGINT"]
    assert str(err.value) == "interrupted: the container did not stop within 0.5 s and was removed"
    container.ended.set()


def test_a_second_signal_gives_up_at_once():
    container = Container(signal.SIGTERM, stubborn=True, signals=2)
    with pytest.raises(rd.Interrupted) as err:
        engine._follow(container, lambda _: None, grace=60)
    assert err.value.code == 143 and container.killed == ["SIGTERM"]
    assert "twice" in str(err.value) and "\n" not in str(err.value)
    container.ended.set()


def test_run_removes_an_interrupted_container(monkeypatch, tmp_path):
    """run() removes the container in every case, and Interrupted reaches the caller."""
    container = Container(signal.SIGINT, stubborn=True)
    removed = []
    container.remove = lambda force: removed.append(force)

    class Client:
        images = containers = None

    client = Client()
    client.images = type("Images", (), {"get": lambda self, name: type("I", (), {"labels": {}})()})()
    client.containers = type("Containers", (), {"create": lambda self, *a, **k: container})()
    container.start = lambda: None
    monkeypatch.setattr(engine, "connect", lambda: client)
    monkeypatch.setattr(engine, "STOP_GRACE", 0.5)
    monkeypatch.setattr(engine._follow, "__defaults__", (0.5,))
    with pytest.raises(rd.Interrupted):
        rd.run("unetpp", out=tmp_path / "results", device_type="cpu", log=lambda _: None)
    assert removed == [True]
    container.ended.set()
