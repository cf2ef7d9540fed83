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
    args = tasks._zoo_args(runtime="openvino", batch_sizes="1,4", post_workers=0, isolate=True, memory_limit=900,
                           profile=5)
    assert args[0] == "--isolate"
    pairs = dict(zip(args[1::2], args[2::2]))
    assert pairs == {"--runtime": "openvino", "--batch-sizes": "1,4", "--post-workers": "0",
                     "--memory-limit": "900", "--profile": "5"}
    assert tasks._zoo_args() == []


def test_runtime_and_its_old_name_backend():
    """One name, --runtime(s), across CLI, code and record; --backend(s) stays as the old name."""
    import pytest
    from invoke import Exit
    tasks = load_tasks()
    assert tasks._one_name("openvino", None, "--runtime", "--backend") == "openvino"
    assert tasks._one_name(None, "torch", "--runtime", "--backend") == "torch"
    assert tasks._one_name("torch", "torch", "--runtime", "--backend") == "torch"
    with pytest.raises(Exit, match="--runtime 'torch' and --backend 'openvino' disagree"):
        tasks._one_name("torch", "openvino", "--runtime", "--backend")
