"""invoke engine-check on a machine short of disk (a CI run once failed with "no space left on
device" in the middle of its second image build): it removes the zoo's superseded images first,
does not start a build below ENGINE_BUILD_NEED_GB free on the engine's data root, says so with the
figures, and exits 4 (told apart from a failed check by .ci/run) when nothing else went wrong."""
from __future__ import annotations

import os
import re

import pytest
from invoke import Context
from invoke.exceptions import Exit

from runner import engine
from runner import engine_check as check
from tests.runner.test_tasks_paths import ROOT, load_tasks


class Engine:
    def __init__(self, root, free):
        self.root, self.free = root, free

    def info(self):
        return {"DockerRootDir": str(self.root)}


def test_disk_short_names_the_data_root_and_the_figures(tmp_path, monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(engine, "connect", lambda: Engine(tmp_path, 0))
    stat = os.statvfs(tmp_path)
    free_gb = stat.f_bavail * stat.f_frsize / 1e9
    assert check._disk_short(free_gb / 2) is None
    reason = check._disk_short(free_gb + 5)
    assert reason.startswith(f"only {free_gb:.1f} GB free in {tmp_path} (the engine's data root)")
    assert f"a build needs about {free_gb + 5:.0f} GB: not built" in reason and "\n" not in reason
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.1.2.3:2376")  # a remote engine: its disk is not known here
    assert check._disk_short(free_gb + 5) is None


def test_engine_check_skips_the_builds_it_has_no_disk_for_and_exits_4(monkeypatch, capsys):
    tasks = load_tasks()
    calls = []
    monkeypatch.setattr(engine, "reachable", lambda: True)
    monkeypatch.setattr(check, "prune_images", lambda: calls.append("prune"))
    monkeypatch.setattr(check, "_call", lambda argv, **kw: calls.append(argv[3:5]) and None)
    monkeypatch.setattr(check, "_disk_short", lambda need: f"only 1.0 GB free in /var/lib/docker, needs {need:.0f}")
    with pytest.raises(Exit) as stop:
        tasks.engine_check(Context(), models="unetpp,fcn8s", no_tests=True)
    assert stop.value.code == check.ENGINE_NO_DISK == 4
    assert calls == ["prune", ["base-image"]]  # nothing was built or run
    out = capsys.readouterr().out
    summary = out[out.index("engine-check summary"):]
    need = f"{check.ENGINE_BUILD_NEED_GB:.0f}"
    assert re.search(rf"\n  build unetpp +0\.0 s  skipped: only 1\.0 GB free in /var/lib/docker, needs {need}\n", summary)
    assert re.search(r"\n  run fcn8s --docker +0\.0 s  skipped: not built\n", summary)

    # a failure elsewhere is a failed check (exit 1), whatever the disk
    monkeypatch.setattr(check, "prune_images", lambda: "cannot list images")
    with pytest.raises(Exit) as stop:
        tasks.engine_check(Context(), models="unetpp", no_tests=True)
    assert stop.value.code == 1


def test_ci_tells_no_disk_apart_from_a_failed_check():
    text = (ROOT / ".ci" / "run").read_text()
    assert '[ "$rc" = 4 ]' in text and "engine-check --models unetpp,fcn8s" in text


def test_engine_check_builds_every_step_and_removes_what_it_replaced(monkeypatch):
    """With disk enough: each build is a --rebuild (images already here from an earlier build are
    not what the check is about), followed by a prune of what it replaced; then the first model
    is built again without --rebuild, where only its core may be built."""
    tasks = load_tasks()
    calls = []
    monkeypatch.setattr(engine, "reachable", lambda: True)
    monkeypatch.setattr(check, "prune_images", lambda: calls.append("prune"))
    monkeypatch.setattr(check, "_call", lambda argv, **kw: calls.append(" ".join(argv[3:]).split(" --pip")[0]) and None)
    monkeypatch.setattr(check, "_disk_short", lambda need: None)
    monkeypatch.setattr(check, "_engine_weights", lambda model, steps: [])
    monkeypatch.setattr(check, "_check_results", lambda folder: None)
    monkeypatch.setattr(check, "_rebuild_reuses", lambda argv: calls.append("again: " + " ".join(argv[3:])))
    tasks.engine_check(Context(), models="unetpp,fcn8s", no_tests=True, pip_config="p.conf")
    run_out = str(check.ENGINE_WORK / "results")
    assert calls == [
        "prune", "base-image",
        "build --model unetpp --base-image local --rebuild", "prune", f"run --model unetpp --docker --out {run_out}",
        "build --model fcn8s --base-image local --rebuild", "prune", f"run --model fcn8s --docker --out {run_out}",
        "again: build --model unetpp --base-image local --pip-config p.conf"]
