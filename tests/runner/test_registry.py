"""zoo.registry, the one place models are found (models/ and ZOO_MODEL_DIRS), and what asks it:
runner.envs, runner.lock, runner.image_store, runner.matrix and zoo.manifest give the same list; a
name found twice is one line naming both manifests; a path is never a name; a built-in sample path
under zoo/samples/ is the family's from any model folder. Host test (standard library + the zoo)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner import MODELS_DIR, ROOT, envs, image_store, lock, matrix
from zoo import registry
from zoo.errors import ZooError
from zoo.paths import SAMPLES_DIR, builtin_data_path

FIVE = {"erfnet", "fastscnn", "fcn8s", "nasfpn", "unetpp"}


def _model(folder: Path, name: str, files=("requirements.txt",)) -> Path:
    d = folder / name
    d.mkdir(parents=True)
    (d / "model.yaml").write_text(f"name: {name}\n")
    for f in files:
        (d / f).write_text("# nothing\n")
    return d


def test_every_user_asks_the_registry(monkeypatch, tmp_path):
    plugged = _model(tmp_path / "plug", "zz_plugged", ("requirements.txt", "Dockerfile"))
    monkeypatch.setenv("ZOO_MODEL_DIRS", str(tmp_path / "plug"))
    names = registry.names()
    assert FIVE | {"zz_plugged"} == set(names) and names == sorted(names)
    assert envs.models() == matrix.known_models() == names
    assert image_store.image_models() == names  # each of them has a Dockerfile
    assert envs.check_model("zz_plugged") == plugged
    assert lock._targets(["zz_plugged"]) == [(plugged / "requirements.txt", plugged / "requirements.lock",
                                              "zz_plugged")]
    files = registry.find("zz_plugged")
    assert (files.manifest, files.lock, files.setup_script, files.dockerfile) == (
        plugged / "model.yaml", plugged / "requirements.lock", plugged / "setup.sh", plugged / "Dockerfile")
    assert files.plugged and not registry.find("unetpp").plugged
    assert files.test_dirs == []
    (plugged / "tests").mkdir()
    assert files.test_dirs == [plugged / "tests"]
    assert registry.find("unetpp").test_dirs == [ROOT / "tests" / "models" / "unetpp"]
    assert registry.find("unetpp").dir == MODELS_DIR / "unetpp"


def test_the_manifest_module_lists_the_same_models(monkeypatch, tmp_path):
    _model(tmp_path / "plug", "zz_plugged")
    env = {**os.environ, "ZOO_MODEL_DIRS": str(tmp_path / "plug")}
    code = "import json; from zoo.manifest import available_models; print(json.dumps(available_models()))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setenv("ZOO_MODEL_DIRS", str(tmp_path / "plug"))
    assert json.loads(proc.stdout) == registry.names()


def test_a_name_defined_twice_is_one_line_naming_both(monkeypatch, tmp_path):
    first, second = _model(tmp_path / "a", "twice"), _model(tmp_path / "b", "twice")
    monkeypatch.setenv("ZOO_MODEL_DIRS", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    with pytest.raises(ZooError) as err:
        registry.names()
    assert str(err.value) == f"{second / 'model.yaml'}: model 'twice' is also defined by {first / 'model.yaml'}"
    with pytest.raises(envs.EnvError, match="is also defined by"):
        envs.models()
    with pytest.raises(lock.LockError, match="is also defined by"):
        lock._targets(["twice"])


@pytest.mark.parametrize("given, hint", [("../models/unetpp", ": did you mean unetpp?"),
                                         (str(MODELS_DIR / "unetpp"), ": did you mean unetpp?"),
                                         ("UNETPP", ": did you mean unetpp?"), ("zzz", ""), ("", ""), (None, "")])
def test_only_a_discovered_name_is_found(given, hint):
    with pytest.raises(registry.UnknownModel) as err:
        registry.find(given)
    assert str(err.value) == (f"unknown model {given!r}{hint} (known: {', '.join(registry.names())}; "
                              f"a model is given by its name, not a path)")


def test_builtin_data_paths(tmp_path):
    assert builtin_data_path(tmp_path, "zoo/samples/dsb2018") == SAMPLES_DIR / "dsb2018"
    assert builtin_data_path(tmp_path, "zoo/samples/dsb2018/builtin_ids.txt") == SAMPLES_DIR / "dsb2018" / "builtin_ids.txt"
    assert builtin_data_path(tmp_path, "data/own") == tmp_path / "data" / "own"  # a model's own sample
    assert builtin_data_path(tmp_path, "samples/dsb2018") == tmp_path / "samples" / "dsb2018"
    for family in ("dsb2018", "cityscapes", "voc", "coco"):  # every family has its sample there
        assert (SAMPLES_DIR / family).is_dir(), family
    assert not any(MODELS_DIR.glob("*/data"))  # no model keeps a family's sample in its own folder
