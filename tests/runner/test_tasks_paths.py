"""invoke run/bench hand local --weights/--data to the model process as absolute paths (that
process runs in the repo root), and leave URLs and checkpoint names alone."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_tasks():
    spec = importlib.util.spec_from_file_location("zoo_tasks", ROOT / "tasks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paths_resolved_from_the_callers_folder(tmp_path, monkeypatch):
    tasks = load_tasks()
    (tmp_path / "w.pth").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert tasks._paths("w.pth", "VOCdevkit") == ["--weights", str(tmp_path / "w.pth"), "--data", str(tmp_path / "VOCdevkit")]
    assert tasks._paths("official", None) == ["--weights", "official"]
    url = "https://download.openmmlab.com/x/y.pth"
    assert tasks._paths(url, None) == ["--weights", url]
    assert tasks._paths(None, None) == []


def test_benchmark_flags_reach_the_zoo_command_line():
    tasks = load_tasks()
    args = tasks._zoo_args({"runtime": "openvino", "batch_sizes": "1,4", "post_workers": 0, "isolate": True,
                            "memory_limit": 900, "profile": "5", "no_peak": True, "option": ["a=1", "b=2"],
                            "save_predictions": False})
    assert args == ["--runtime", "openvino", "--batch-sizes", "1,4", "--option", "a=1", "--option", "b=2",
                    "--no-peak", "--post-workers", "0", "--isolate", "--memory-limit", "900", "--profile", "5"]
    assert tasks._zoo_args({}) == [] and tasks._zoo_args({"isolate": False, "option": []}) == []
    assert tasks._zoo_args({"profile": True}) == ["--profile", "5"]  # the flag alone: its declared value
    assert "--runtime" not in " ".join(tasks._zoo_args({"runtime": "torch"}, "bench"))  # bench: --runtimes


def test_local_files_made_absolute_and_refused_with_docker(tmp_path, monkeypatch):
    import pytest
    from invoke import Exit
    tasks = load_tasks()
    monkeypatch.chdir(tmp_path)
    assert tasks._zoo_args({"ids_file": "ids.txt", "onnx": "m.onnx"}) == [
        "--ids-file", str(tmp_path / "ids.txt"), "--onnx", str(tmp_path / "m.onnx")]
    with pytest.raises(Exit, match="--ids-file is not supported with --docker"):
        tasks._zoo_args({"ids_file": "ids.txt"}, docker_=True)


def test_runtime_and_its_old_name_backend():
    """One name, --runtime(s), across CLI, code and record; --backend(s) stays as the old name."""
    import pytest
    from invoke import Exit
    tasks = load_tasks()
    assert tasks._zoo_args({"runtime": "openvino"}) == ["--runtime", "openvino"]
    assert tasks._zoo_args({"backend": "torch"}) == ["--runtime", "torch"]
    assert tasks._zoo_args({"runtime": "torch", "backend": "torch"}) == ["--runtime", "torch"]
    with pytest.raises(Exit, match="--runtime 'torch' and --backend 'openvino' disagree"):
        tasks._zoo_args({"runtime": "torch", "backend": "openvino"})
    assert tasks._zoo_args({"infer_input": "zeros"}) == ["--input", "zeros"]  # invoke's old --infer-input
    with pytest.raises(Exit, match="--runtimes 'torch' and --backends 'openvino' disagree"):
        tasks._one_name("torch", "openvino", "--runtimes", "--backends")
