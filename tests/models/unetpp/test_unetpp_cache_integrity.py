"""Every cache that can change a number is checked before use (issue 21): OpenVINO's compiled
blobs through the real CLI (flipped, truncated, sidecar deleted: rebuilt with a one-line warning,
the same figures as a clean run), the sealed folders third-party tools write (a real writer
process), and by construction the runtimes that use them (Ascend's .om with a stand-in `atc`,
TensorRT's engine folder through ONNX Runtime, which falls back to the CPU here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.zootest import last_json
from zoo.cache import SIDECAR, damage, seal_problem, sealed_folder

OV_RUN = ("run", "--model", "unetpp", "--runtime", "openvino", "--batch-sizes", "2", "--limit", "8", "--no-peak",
          "--iters", "1", "--warmup", "0")


def _flip_middle(path: Path, n: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    mid = max(0, len(data) // 2 - n // 2)
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


def _figures(rec: dict) -> dict:
    return {"accuracy": [(a["name"], a["value"]) for a in rec["accuracy"]], "max_rel_diff": rec["verify"]["max_rel_diff"],
            "verify_passed": rec["verify"]["passed"], "status": rec["status"]}


def _entries(rec: dict) -> dict[str, Path]:
    return {bs: Path(p) for bs, p in rec["runtime"]["settings"]["entry_per_batch"].items()}


def _ov_run(run_zoo, tmp_path, name):
    proc = run_zoo(*OV_RUN, "--out", tmp_path / name)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, last_json(proc)


@pytest.fixture(scope="module")
def ov_clean(run_zoo, tmp_path_factory):
    """A clean OpenVINO run (builds or reuses its verify and inference blobs): the figures to match."""
    pytest.importorskip("openvino")
    proc, rec = _ov_run(run_zoo, tmp_path_factory.mktemp("ov"), "clean")
    assert sorted(_entries(rec)) == ["2", "4"]  # the inference batch size and the verify stage's
    assert rec["verify"]["passed"] and rec["verify"]["max_rel_diff"] < 1e-3
    return rec


def _damaged_lines(proc, entries, problem: str) -> tuple[list[str], list[str]]:
    """(the cache warnings on stderr, the ones expected: one line per damaged entry), sorted."""
    got = sorted(ln for ln in proc.stderr.splitlines() if "cache entry" in ln)
    return got, sorted(f"warning: cache entry {e} is damaged ({problem}); rebuilding" for e in entries)


def test_flipped_openvino_blobs_are_rebuilt_not_loaded(ov_clean, run_zoo, tmp_path):
    entries = _entries(ov_clean)
    for e in entries.values():
        _flip_middle(e / "model.blob")
    proc, rec = _ov_run(run_zoo, tmp_path, "flipped")
    got, want = _damaged_lines(proc, entries.values(), "model.blob content differs from its sha256")
    assert sorted(got) == want
    assert _figures(rec) == _figures(ov_clean)
    s = rec["runtime"]["settings"]
    assert s["compile_cached"] is False and s["compile_cached_per_batch"] == {"2": False, "4": False}
    assert all(damage(e) is None for e in entries.values())  # rebuilt, sealed again


def test_truncated_blob_and_deleted_sidecar_are_rebuilt(ov_clean, run_zoo, tmp_path):
    entries = _entries(ov_clean)
    blob = entries["2"] / "model.blob"
    size = blob.stat().st_size
    os.truncate(blob, size // 2)
    proc, rec = _ov_run(run_zoo, tmp_path, "truncated")
    got, want = _damaged_lines(proc, [entries["2"]], f"model.blob is {size // 2} bytes, expected {size}")
    assert got == want
    assert _figures(rec) == _figures(ov_clean)
    assert rec["runtime"]["settings"]["compile_cached_per_batch"] == {"2": False, "4": True}

    (entries["4"] / SIDECAR).unlink()
    proc, rec = _ov_run(run_zoo, tmp_path, "no-sidecar")
    got, want = _damaged_lines(proc, [entries["4"]], f"no {SIDECAR}")
    assert got == want
    assert _figures(rec) == _figures(ov_clean)
    s = rec["runtime"]["settings"]  # the intact blob of batch size 2 was reused, without a warning
    assert s["compile_cached_per_batch"] == {"2": True, "4": False} and s["compile_cached"] is False


# --- sealed folders, with a real writer process --------------------------------------------------

WRITER = """import sys, pathlib
folder, count = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
count.write_text(str(int(count.read_text() or 0) + 1) if count.exists() else "1")
for name in (a for a in sys.argv[3:] if not a.startswith("--")):
    p = folder / name
    if not p.exists():  # like an engine cache: what is there is reused
        p.write_bytes((name * 4000).encode())
if "--die" in sys.argv:
    (folder / "half.bin").write_bytes(b"half")
    sys.exit(3)
"""


def _tool(tmp_path, folder, *args) -> None:
    """The third-party tool writing into `folder` (a separate process), under the folder's seal."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    with sealed_folder(folder):
        proc = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "count"), *args])
        if proc.returncode:
            raise RuntimeError(f"tool exited {proc.returncode}")


def _count(tmp_path) -> int:
    return int((tmp_path / "count").read_text())


def test_sealed_folder_checks_what_a_tool_wrote(tmp_path, capfd):
    folder = tmp_path / "engines"
    _tool(tmp_path, folder, "a.engine", "b.engine")
    assert seal_problem(folder) is None and sorted(p.name for p in folder.iterdir()) == [SIDECAR, "a.engine", "b.engine"]
    original = (folder / "a.engine").read_bytes()
    _tool(tmp_path, folder, "a.engine", "b.engine")  # intact: nothing removed, no warning
    assert capfd.readouterr().err == "" and (folder / "a.engine").read_bytes() == original and _count(tmp_path) == 2

    _flip_middle(folder / "a.engine", 100)
    assert seal_problem(folder) == "a.engine content differs from its sha256"
    _tool(tmp_path, folder, "a.engine")
    assert capfd.readouterr().err == (f"warning: {folder}: a.engine content differs from its sha256; "
                                      f"removing its files so that they are rebuilt\n")
    assert (folder / "a.engine").read_bytes() == original and not (folder / "b.engine").exists()
    assert seal_problem(folder) is None

    (folder / "stray.engine").write_bytes(b"x")  # written outside the seal
    _tool(tmp_path, folder, "a.engine")
    assert "stray.engine is not sealed" in capfd.readouterr().err and not (folder / "stray.engine").exists()


def test_sealed_folder_distrusts_what_a_failed_tool_left(tmp_path, capfd):
    folder = tmp_path / "engines"
    _tool(tmp_path, folder, "a.engine")
    with pytest.raises(RuntimeError, match="tool exited 3"):
        _tool(tmp_path, folder, "a.engine", "--die")
    assert seal_problem(folder) == "half.bin is not sealed"
    capfd.readouterr()
    _tool(tmp_path, folder, "a.engine")
    assert "half.bin is not sealed; removing its files" in capfd.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == [SIDECAR, "a.engine"] and _count(tmp_path) == 3

    (folder / SIDECAR).unlink()  # an unsealed folder (e.g. from a zoo version before seals)
    _tool(tmp_path, folder, "a.engine")
    assert "a.engine is not sealed" in capfd.readouterr().err and seal_problem(folder) is None


def _relu_graph(path: Path) -> Path:
    """A one-node ONNX graph with a dynamic batch dimension."""
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 4, 4])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # one this onnxruntime reads
    onnx.save(model, path)
    return path


def test_openvino_entry_key_covers_config_cpu_and_isa(tmp_path):
    pytest.importorskip("openvino")
    from zoo.envinfo import cpu_isa, cpu_name
    from zoo.fileutil import file_digest
    from zoo.runtimes.base import ModelArtifacts
    from zoo.runtimes.openvino_rt import OpenVinoRuntime
    graph = _relu_graph(tmp_path / "m.onnx")
    entries = []
    for threads in (1, 2):
        rt = OpenVinoRuntime(threads)
        rt.compile(ModelArtifacts(graph, ["x"], ["y"]), tmp_path / "cache")
        rt.infer({"x": np.ones((1, 3, 4, 4), np.float32)})
        entries.append(Path(rt.entries[1]))
        key = json.loads((entries[-1] / "key.json").read_text())
        assert key["cpu"] == cpu_name() and key["isa"] == cpu_isa() and key["shape"] == [1, 3, 4, 4]
        assert key["model"] == file_digest(graph) and key["config"]["INFERENCE_NUM_THREADS"] == str(threads)
        assert damage(entries[-1]) is None and rt.settings()["compile_cached"] is False
    assert entries[0] != entries[1]  # another config: another blob


# --- the runtimes use them ------------------------------------------------------------------------

def _fake_atc(tmp_path, monkeypatch) -> Path:
    """`atc` on PATH writing a deterministic .om per --output and counting its compilations."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "atc.calls"
    (bin_dir / "atc").write_text(
        '#!/bin/sh\ncase "$1" in --version) echo "ATC version 8.0.test"; exit 0;; esac\n'
        f'echo "$@" >> {calls}\n'
        'for a in "$@"; do case $a in --output=*) out="${a#--output=}";; esac; done\n'
        'i=0; while [ $i -lt 200 ]; do echo "om of $*"; i=$((i+1)); done > "$out.om"\n')
    (bin_dir / "atc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("ZOO_ASCEND_SOC", "Ascend310P3")
    return calls


def test_ascend_om_is_checked_before_reuse(tmp_path, monkeypatch, capfd):
    from zoo.runtimes.ascend_rt import AscendRuntime
    from zoo.runtimes.base import ModelArtifacts
    calls = _fake_atc(tmp_path, monkeypatch)
    arts = ModelArtifacts(tmp_path / "m.onnx", ["input"], ["output"], key="ab" * 32)

    def om(bs: int = 2) -> tuple[Path, AscendRuntime]:
        rt = AscendRuntime()
        rt.compile(arts, tmp_path / "cache")
        return Path(rt._om((bs, 3, 96, 96))), rt

    path, rt = om()
    original = path.read_bytes()
    assert len(calls.read_text().splitlines()) == 1 and rt.compiled.cached is False
    path, rt = om()  # intact: reused
    assert len(calls.read_text().splitlines()) == 1 and rt.compiled.cached is True and capfd.readouterr().err == ""

    _flip_middle(path, 1000)
    path, rt = om()
    assert capfd.readouterr().err == (f"warning: {path.parent}: bs2.om content differs from its sha256; "
                                      f"removing its files so that they are rebuilt\n")
    assert len(calls.read_text().splitlines()) == 2 and path.read_bytes() == original and rt.compiled.cached is False

    os.truncate(path, 10)
    om()
    assert "bs2.om is 10 bytes, expected" in capfd.readouterr().err and len(calls.read_text().splitlines()) == 3
    assert path.read_bytes() == original and seal_problem(path.parent) is None


def test_ascend_om_folder_is_per_atc_version(tmp_path, monkeypatch):
    from zoo.runtimes.ascend_rt import AscendRuntime
    from zoo.runtimes.base import ModelArtifacts
    _fake_atc(tmp_path, monkeypatch)
    arts = ModelArtifacts(tmp_path / "m.onnx", ["input"], ["output"], key="ab" * 32)
    before = AscendRuntime().compile(arts, tmp_path / "cache").path
    atc = tmp_path / "bin" / "atc"
    atc.write_text(atc.read_text().replace("8.0.test", "8.1.test"))
    assert AscendRuntime().compile(arts, tmp_path / "cache").path != before


def test_tensorrt_engine_folder_is_checked_before_the_session_and_each_new_shape(tmp_path, capfd):
    """ONNX Runtime without TensorRT falls back to the CPU here: the session and the runs are
    real, the engines are a stand-in written into the folder the EP would use."""
    from zoo.runtimes.base import ModelArtifacts
    from zoo.runtimes.onnxruntime_rt import OnnxRuntimeTensorRT
    graph = _relu_graph(tmp_path / "m.onnx")
    rt = OnnxRuntimeTensorRT(1)
    rt.compile(ModelArtifacts(graph, ["x"], ["y"]), tmp_path / "cache")
    rt.ort_device = "cpu"  # the inputs' device: no GPU here
    engines = rt.engines
    assert str(engines) == rt.options[0]["trt_engine_cache_path"]
    (engines / "m_1.engine").write_bytes(b"engine" * 1000)
    rt.load()  # unsealed engine: removed before the session could read it, then the folder is sealed
    assert f"warning: {engines}: m_1.engine is not sealed; removing its files" in capfd.readouterr().err
    assert not (engines / "m_1.engine").exists() and seal_problem(engines) is None

    (engines / "m_2.engine").write_bytes(b"engine" * 1000)  # as if the EP built one at a first run
    x = np.ones((2, 3, 4, 4), np.float32)
    np.testing.assert_array_equal(rt.infer({"x": x})["y"], x)
    assert "m_2.engine is not sealed" in capfd.readouterr().err  # checked before that first run
    (engines / "m_2.engine").write_bytes(b"engine" * 1000)
    rt.infer({"x": x})  # a shape already run: no check, no lock
    assert capfd.readouterr().err == "" and (engines / "m_2.engine").exists()
    rt.close()
