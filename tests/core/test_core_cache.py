"""zoo.cache: entries built once under a lock by concurrent processes, published by a rename,
verified against their sidecar before use, rebuilt with a warning when damaged; temporary folders
of failed, interrupted or killed builders never survive the next builder. Real files, real
processes and real signals; plus the never-overwrite result writes of zoo.fileutil."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from zoo import cache
from zoo.cache import SIDECAR, damage, ensure_entry, lock_path
from zoo.errors import ZooError
from zoo.fileutil import create_new_bytes, create_unique_json, file_digest

ROOT = Path(__file__).resolve().parents[2]


def _writer(payload: bytes = b"x" * 1000, calls: list | None = None):
    def build(tmp: Path) -> None:
        if calls is not None:
            calls.append(tmp)
        (tmp / "sub").mkdir()
        (tmp / "a.bin").write_bytes(payload)
        (tmp / "sub" / "b.txt").write_text("hello")
    return build


def _leftovers(entry: Path) -> list[str]:
    """Everything in the entry's parent except the entry itself (temp folders, lock files)."""
    return sorted(p.name for p in entry.parent.iterdir() if p.name != entry.name)


def test_build_once_publish_and_reuse(tmp_path):
    entry = tmp_path / "k" / "abc123"
    calls = []
    assert ensure_entry(entry, _writer(calls=calls)) is False
    assert len(calls) == 1 and not calls[0].exists()              # built elsewhere, then renamed
    assert calls[0].parent == entry.parent and calls[0].name.startswith(".abc123.")
    side = json.loads((entry / SIDECAR).read_text())
    assert side["files"] == [{"path": "a.bin", "size": 1000, "sha256": file_digest(entry / "a.bin")},
                             {"path": "sub/b.txt", "size": 5, "sha256": file_digest(entry / "sub" / "b.txt")}]
    assert _leftovers(entry) == []                                 # no temp folder, no lock file
    assert ensure_entry(entry, _writer(calls=calls)) is True
    assert len(calls) == 1


@pytest.mark.parametrize("harm, what", [
    (lambda e: (e / "a.bin").write_bytes(b"x" * 281), "a.bin is 281 bytes, expected 1000"),
    (lambda e: (e / "a.bin").write_bytes(b"y" * 1000), "a.bin content differs from its sha256"),
    (lambda e: (e / "sub" / "b.txt").unlink(), "sub/b.txt missing"),
    (lambda e: (e / SIDECAR).unlink(), f"no {SIDECAR}"),
    (lambda e: (e / SIDECAR).write_text("{not json"), f"{SIDECAR} unreadable"),
])
def test_damaged_entry_is_rebuilt_with_a_one_line_warning(tmp_path, capfd, harm, what):
    entry = tmp_path / "e"
    ensure_entry(entry, _writer())
    harm(entry)
    capfd.readouterr()
    assert ensure_entry(entry, _writer()) is False
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: cache entry {entry} is damaged (")
    assert what in err[0] and err[0].endswith("); rebuilding")
    assert damage(entry) is None and (entry / "a.bin").read_bytes() == b"x" * 1000
    assert _leftovers(entry) == []


def test_entry_without_sidecar_from_an_older_zoo_is_rebuilt(tmp_path, capfd):
    entry = tmp_path / "legacy"
    entry.mkdir()
    (entry / "model.onnx").write_bytes(b"\x08" * 281)               # the old layout: a bare file
    assert ensure_entry(entry, _writer()) is False
    assert f"no {SIDECAR}" in capfd.readouterr().err
    assert not (entry / "model.onnx").exists() and damage(entry) is None


def test_verify_failure_is_damage_and_an_unverifiable_build_is_not_published(tmp_path, capfd):
    entry = tmp_path / "v"
    ensure_entry(entry, _writer())

    def verify(folder):
        if (folder / "a.bin").read_bytes()[:1] != b"z":
            raise ZooError(f"{folder / 'a.bin'}: not a z file")
    with pytest.raises(ZooError, match="not a z file"):
        ensure_entry(entry, _writer(), verify=verify)               # the rebuild fails verify too
    assert "not a z file); rebuilding" in capfd.readouterr().err
    assert _leftovers(entry) == []                                 # nothing half-published
    assert ensure_entry(entry, _writer(b"z" * 10), verify=verify) is False
    assert ensure_entry(entry, _writer(b"z" * 10), verify=verify) is True


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt(), SystemExit(3)])
def test_failed_or_interrupted_build_leaves_nothing(tmp_path, exc):
    entry = tmp_path / "f"
    seen = []

    def build(tmp):
        seen.append(tmp)
        (tmp / "part.bin").write_bytes(b"half")
        raise exc
    with pytest.raises(type(exc)):
        ensure_entry(entry, build)
    assert seen and not seen[0].exists()
    assert not entry.exists() and _leftovers(entry) == []           # no temp folder, lock released
    assert ensure_entry(entry, _writer()) is False                   # and the next build works


# --- real processes -----------------------------------------------------------------------------

BUILDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from zoo.cache import ensure_entry
    entry, log, gate = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

    def build(tmp):
        with open(log, "a") as f:
            f.write(f"{tmp}\\n")
        (tmp / "a.bin").write_bytes(b"x" * 1000)
        deadline = time.time() + 120
        while not gate.exists() and time.time() < deadline:  # held open until the test says so
            time.sleep(0.01)
        (tmp / "b.bin").write_bytes(b"y" * 10)

    print("cached" if ensure_entry(entry, build) else "built", flush=True)
""")


def _builder(entry: Path, log: Path, gate: Path) -> subprocess.Popen:
    """A process building `entry` (logging each build's temp folder to `log`) whose build
    finishes once the file `gate` exists."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", BUILDER, str(entry), str(log), str(gate)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # CI may start us with SIGINT ignored


def _wait_for_build_start(log: Path, proc: subprocess.Popen, timeout: float = 60) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.exists() and log.read_text().strip():
            return Path(log.read_text().splitlines()[0])
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the builder never started")


def test_concurrent_processes_build_once_the_others_wait_and_reuse(tmp_path):
    entry, log, gate = tmp_path / "c" / "e", tmp_path / "log", tmp_path / "gate"
    first = _builder(entry, log, gate)
    _wait_for_build_start(log, first)
    others = [_builder(entry, log, gate) for _ in range(2)]
    for p in others:  # each one finds the entry being built and says so, once
        assert p.stderr.readline().strip() == f"waiting for {entry} (being built by another run)"
    gate.touch()
    outs = [p.communicate(timeout=120) for p in (first, *others)]
    assert [p.returncode for p in (first, *others)] == [0, 0, 0], outs
    assert [o[0].strip() for o in outs] == ["built", "cached", "cached"]
    assert len(log.read_text().splitlines()) == 1                   # built exactly once
    assert [err for _, err in outs] == ["", "", ""]                  # no second "waiting" line
    assert damage(entry) is None and _leftovers(entry) == []


def test_killed_builder_leaves_a_temp_folder_the_next_builder_removes(tmp_path):
    entry, log = tmp_path / "k" / "e", tmp_path / "log"
    victim = _builder(entry, log, tmp_path / "never")
    tmp = _wait_for_build_start(log, victim)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert tmp.is_dir() and not entry.exists()                       # what a killed builder leaves
    assert ensure_entry(entry, _writer()) is False
    assert not tmp.exists() and _leftovers(entry) == []
    assert damage(entry) is None


def test_sigint_during_a_build_removes_the_temp_folder_and_releases_the_lock(tmp_path):
    entry, log = tmp_path / "i" / "e", tmp_path / "log"
    proc = _builder(entry, log, tmp_path / "never")
    tmp = _wait_for_build_start(log, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGINT and "KeyboardInterrupt" in err  # died of the interrupt
    assert not tmp.exists() and not entry.exists() and _leftovers(entry) == []
    assert not lock_path(entry).exists()


SECOND_PRESS = textwrap.dedent("""
    import signal, sys
    from pathlib import Path
    from zoo.cache import ensure_entry

    def second_press(signum, frame):
        raise KeyboardInterrupt

    def build(tmp):
        for i in range(4000):  # a clean-up that takes a while
            (tmp / f"f{i}").write_bytes(b"")
        print(tmp, flush=True)
        signal.signal(signal.SIGALRM, second_press)
        signal.setitimer(signal.ITIMER_REAL, 0.002)  # "Ctrl-C" again, inside the clean-up
        raise KeyboardInterrupt

    try:
        ensure_entry(Path(sys.argv[1]), build)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
""")


def test_a_second_interrupt_during_the_clean_up_does_not_leave_the_temp_folder(tmp_path):
    entry = tmp_path / "d" / "e"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SECOND_PRESS, str(entry)], env=env, capture_output=True,
                          text=True, timeout=120)
    lines = proc.stdout.split()
    assert proc.returncode == 0 and lines[-1] == "interrupted", (proc.stdout, proc.stderr)
    assert not Path(lines[0]).exists() and not entry.exists() and _leftovers(entry) == []


def test_the_fixed_temp_name_of_older_versions_is_cleaned_by_the_next_builder(tmp_path):
    entry = tmp_path / "o" / "0123abcd"
    legacy = entry.with_name("0123abcd.tmp")          # what an interrupted older zoo left behind
    (legacy / "images").mkdir(parents=True)
    assert ensure_entry(entry, _writer()) is False
    assert not legacy.exists() and _leftovers(entry) == []


def test_stale_temp_of_a_killed_swap_is_cleaned_when_the_entry_is_reused(tmp_path):
    entry = tmp_path / "s" / "e"
    ensure_entry(entry, _writer())
    old = entry.with_name(f".e.{2 ** 22 + 7}-abcd1234.old.tmp")   # a replaced entry whose removal was cut
    (old / "sub").mkdir(parents=True)
    unrelated = entry.with_name(".e.x.something.tmp")               # not this scheme's name: kept
    unrelated.mkdir()
    assert ensure_entry(entry, _writer()) is True
    assert not old.exists() and unrelated.exists()


def test_lock_file_is_removed_and_relocked_safely(tmp_path):
    entry = tmp_path / "l"
    with cache.entry_lock(entry) as waited:
        assert waited is False and lock_path(entry).exists()
        with cache.try_entry_lock(entry) as held:                   # another open file description
            assert held is False
    assert not lock_path(entry).exists()
    with cache.try_entry_lock(entry) as held:
        assert held is True
    assert not lock_path(entry).exists()


# --- ONNX export and ONNX Runtime entries ---------------------------------------------------------

def test_truncated_compiled_onnxruntime_entry_is_rebuilt(tiny_onnx, tmp_path, capfd):
    from zoo.runtimes import ModelArtifacts
    from zoo.runtimes.onnxruntime_rt import OnnxRuntime
    from tests.core.conftest import IN_NAME, OUT_NAME, random_batch
    arts = ModelArtifacts(onnx_path=tiny_onnx, input_names=[IN_NAME], output_names=[OUT_NAME])
    first = OnnxRuntime(threads=1).compile(arts, tmp_path)
    good = first.path.read_bytes()
    first.path.write_bytes(good[: len(good) // 2])
    capfd.readouterr()
    rt = OnnxRuntime(threads=1)
    again = rt.compile(arts, tmp_path)
    err = capfd.readouterr().err
    assert again.cached is False and again.path == first.path      # rebuilt (not byte-reproducible)
    assert damage(again.path.parent) is None
    assert f"warning: cache entry {first.path.parent} is damaged (model.ort.onnx is" in err
    with rt:
        assert rt.infer({IN_NAME: random_batch(2)})[OUT_NAME].shape == (2, 1, 16, 16)
    assert OnnxRuntime(threads=1).compile(arts, tmp_path).cached is True
    assert _leftovers(first.path.parent) == []


def test_truncated_export_entry_is_rebuilt_with_the_warning(tiny_model, make_batch, tmp_path, capfd):
    from zoo.onnx_export import check_onnx, ensure_onnx
    args = (tiny_model, make_batch(2), tmp_path, "k9", "images", "logits", 17, True, {"zoo.model": "tiny"})
    first = ensure_onnx(*args)
    path = Path(first["path"])
    path.write_bytes(path.read_bytes()[:281])
    capfd.readouterr()
    again = ensure_onnx(*args)
    assert again["cached"] is False and again["onnx_sha256"] == first["onnx_sha256"]
    assert f"cache entry {path.parent} is damaged (model.onnx is 281 bytes" in capfd.readouterr().err
    assert check_onnx(path) == "full_check_passed"
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["k9"]


def test_apply_edit_writes_under_a_unique_temp_name(tiny_onnx, tmp_path):
    from zoo.onnx_export import apply_edit
    dst = tmp_path / "model.edit.onnx"
    squatter = tmp_path / "model.edit.onnx.tmp"                      # the old fixed temporary name
    squatter.write_text("someone else's file")
    assert apply_edit(tiny_onnx, dst, lambda m: {"changed": 0}) == {"changed": 0}
    assert dst.read_bytes() == tiny_onnx.read_bytes()
    assert squatter.read_text() == "someone else's file"
    with pytest.raises(ZooError):
        apply_edit(tiny_onnx, dst, lambda m: setattr(m.graph.node[0], "op_type", "NoSuchOp"))  # fails the checker
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.edit.onnx", "model.edit.onnx.tmp"]


# --- results never overwritten ----------------------------------------------------------------------

def test_create_new_bytes_never_replaces_a_file(tmp_path):
    p = tmp_path / "r.json"
    create_new_bytes(p, b"first")
    with pytest.raises(FileExistsError):
        create_new_bytes(p, b"second")
    assert p.read_bytes() == b"first" and os.listdir(tmp_path) == ["r.json"]


def test_unique_json_takes_another_name_on_a_collision(tmp_path, monkeypatch):
    import zoo.fileutil
    names = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(zoo.fileutil.secrets, "token_hex", lambda n: next(names))
    (tmp_path / "m-x-T-aaaaaa.json").write_text("an earlier run")
    seen = []
    path = create_unique_json(tmp_path, {"run_id": "m-x-T", "v": 1}, "run_id",
                              validate=lambda rec, where: seen.append((rec["run_id"], where)))
    assert path == tmp_path / "m-x-T-bbbbbb.json"
    assert json.loads(path.read_text()) == {"run_id": "m-x-T-bbbbbb", "v": 1}
    assert seen == [("m-x-T-bbbbbb", str(path))]
    assert (tmp_path / "m-x-T-aaaaaa.json").read_text() == "an earlier run"
    assert sorted(os.listdir(tmp_path)) == ["m-x-T-aaaaaa.json", "m-x-T-bbbbbb.json"]


def test_unique_json_in_concurrent_processes_keeps_every_record(tmp_path):
    code = ("import sys; from pathlib import Path; from zoo.fileutil import create_unique_json;"
            "print(create_unique_json(Path(sys.argv[1]), {'run_id': 'same-second', 'n': int(sys.argv[2])}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(i)], env=env,
                              stdout=subprocess.PIPE, text=True) for i in range(6)]
    paths = [Path(p.communicate(timeout=60)[0].strip()) for p in procs]
    assert len(set(paths)) == 6
    assert sorted(json.loads(p.read_text())["n"] for p in paths) == list(range(6))
    assert all(json.loads(p.read_text())["run_id"] == p.stem for p in paths)
