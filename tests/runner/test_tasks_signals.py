"""`invoke run` forwards SIGTERM and SIGINT to the model process and waits for it: the model
process stops cleanly (one line, no result) and invoke exits with its code. Before, SIGTERM killed
invoke alone, and the orphaned model process wrote a full result 10-13 s later."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner import envs

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not envs.is_current("unetpp"),
                                reason="needs the unetpp environment (`invoke test` creates it before the host tests)")


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(x) for x in text.split()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig,code,line", [(signal.SIGTERM, 143, "error: invoke run: terminated (SIGTERM); no result written"),
                                           (signal.SIGINT, 130, "error: invoke run: interrupted; no result written")])
def test_signal_to_invoke_reaches_the_model_process(tmp_path, sig, code, line):
    out = tmp_path / "results"
    env = {**os.environ, "ZOO_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "run", "--model", "unetpp", "--batch-sizes", "1",
                             "--iters", "100000", "--time-budget", "600", "--stable-tolerance", "0", "--no-peak",
                             "--out", str(out)],  # no stop-when-stable: still timing when signalled
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # SIGINT ignored, as a background job of a non-interactive shell starts it:
                            # invoke and the model process set their own handlers, whatever the caller's
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.time() + 300
        for text in proc.stderr:  # the model process's progress comes through invoke's stderr
            if text.startswith("[6/7]") or time.time() > deadline:  # inference started
                break
        model_procs = _children(proc.pid)
        assert model_procs, "the model process should be running"
        time.sleep(1.0)
        proc.send_signal(sig)
        rest = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, rest[-2000:]
    assert line in rest.strip().splitlines(), rest[-2000:]
    assert "Traceback" not in rest
    for pid in model_procs:
        assert not _alive(pid), "the model process outlived invoke"
    assert not [p for p in out.rglob("*") if p.is_file()], "no result may be written"
