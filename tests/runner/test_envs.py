"""Per-model environments: created from the model's pinned files, reused while unchanged."""
from __future__ import annotations

import re

import pytest

from runner import MODELS_DIR, envs

PIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][0-9A-Za-z.+!-]*")


def _pins(path):
    return {line.split("==")[0].lower(): line.split("==")[1] for line in
            (line.split("#", 1)[0].strip() for line in path.read_text().splitlines()) if line}


@pytest.mark.parametrize("model", envs.models())
def test_every_model_pins_its_environment(model):
    d = MODELS_DIR / model
    req, lock = _pins(d / "requirements.txt"), _pins(d / "constraints.txt")
    for path in (d / "requirements.txt", d / "constraints.txt"):
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            assert not line or PIN.fullmatch(line), f"{path}: {line!r} is not pinned"
    for name, version in req.items():  # the lock agrees with every direct pin
        assert lock.get(name) == version.split("+")[0], name


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    models = tmp_path / "models"
    d = models / "toy"
    d.mkdir(parents=True)
    (d / "model.yaml").write_text("name: toy\n")
    (d / "requirements.txt").write_text("# nothing to install\n")
    monkeypatch.setattr(envs, "MODELS_DIR", models)
    monkeypatch.setattr(envs, "VENVS", tmp_path / "venvs")
    return d


def test_env_is_created_then_reused_then_rebuilt_on_change(fake_model, capsys):
    assert not envs.is_current("toy")
    py = envs.ensure("toy")
    assert py.exists() and envs.is_current("toy")
    first = envs.fingerprint("toy")
    capsys.readouterr()
    assert envs.ensure("toy") == py
    assert "up to date" in capsys.readouterr().err
    (fake_model / "requirements.txt").write_text("# changed\n")
    assert envs.fingerprint("toy") != first and not envs.is_current("toy")
    envs.ensure("toy")
    assert envs.is_current("toy")


def test_unknown_model_and_missing_requirements(fake_model):
    with pytest.raises(envs.EnvError, match="unknown model 'nope'.*toy"):
        envs.ensure("nope")
    (fake_model / "requirements.txt").unlink()
    with pytest.raises(envs.EnvError, match="requirements.txt: missing"):
        envs.ensure("toy")


def test_failed_install_leaves_no_stamp(fake_model):
    (fake_model / "requirements.txt").write_text("definitely-not-a-package-zoo-test==0.0.0\n")
    (fake_model / "constraints.txt").write_text("")
    with pytest.raises(envs.EnvError, match="installing .*requirements.txt failed"):
        envs.ensure("toy")
    assert not envs.is_current("toy")
