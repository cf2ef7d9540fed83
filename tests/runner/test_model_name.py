"""A model name is validated once against the discovered manifests; only the validated name ever
becomes a path. A path given as --model (`../models/unetpp`, an absolute path) used to reach
`venv --clear` and delete the model's source folder."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner import MODELS_DIR, envs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    """A throwaway copy of the repository (no venvs, no cache, no results): whatever a bad --model
    does, it does there."""
    dst = tmp_path_factory.mktemp("repo") / "zoo"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(".git", ".venvs", "work", "results", "__pycache__",
                                                             ".pytest_cache"))
    return dst


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("spelling", ["../models/unetpp", "ABSOLUTE", "unetpp/", "./unetpp", "unetpp/../unetpp",
                                      "UNETPP", ".", "..", ""])
def test_a_path_as_model_is_refused_and_deletes_nothing(repo_copy, spelling):
    model_dir = repo_copy / "models" / "unetpp"
    before = _tree(repo_copy / "models")
    name = str(model_dir) if spelling == "ABSOLUTE" else spelling
    for task in (["run", "--model", name], ["setup", "--model", name], ["build", "--model", name, "--dry-run"]):
        proc = subprocess.run([sys.executable, "-m", "invoke", *task], cwd=repo_copy, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2, (task, proc.stdout, proc.stderr)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
        assert "model" in lines[0] and "known:" in lines[0], lines[0]
        assert _tree(repo_copy / "models") == before, f"{task}: the models folder changed"
        assert not (repo_copy / ".venvs").exists(), f"{task}: an environment was created"


@pytest.mark.parametrize("bad", ["../models/unetpp", str(MODELS_DIR / "unetpp"), "unetpp/", "UNETPP", "", ".",
                                 "unet pp", "unetpp\0"])
def test_check_model_takes_only_a_discovered_name(bad):
    with pytest.raises(envs.EnvError, match="unknown model"):
        envs.check_model(bad)


def test_check_model_returns_the_models_folder():
    assert envs.check_model("unetpp") == MODELS_DIR / "unetpp"
