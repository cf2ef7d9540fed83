"""Per-model environments: installed with --require-hashes from the model's hash lock, reused
while unchanged; the locks themselves (every line pinned and hashed, torch the CPU build)."""
from __future__ import annotations

import base64
import hashlib
import re
import zipfile

import pytest

from runner import ROOT, envs
from zoo import registry

PIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[a-z0-9,-]+\])?==[0-9][0-9A-Za-z.+!-]*")  # name[extras]==version
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
LOCKS = [registry.find(m).lock for m in envs.models()] + [
    ROOT / "runner" / "mmcv-build" / "requirements.lock",
    ROOT / "runner" / "mmcv-build" / "setuptools.lock",
    ROOT / "runner" / "locktools.lock"]


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _entries(path):
    """(requirement, [hash options]) per logical line: continuation lines joined, comments
    dropped (an independent reading of the file, not runner.lock's)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            req, *rest = line.split()
            out.append((req, rest))
    return out


def _pins(path):
    return {_norm(req.split("==")[0]): req.split("==")[1] for req, _ in _entries(path)}


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.relative_to(ROOT).as_posix() if p.is_relative_to(ROOT) else str(p))
def test_every_lock_line_is_pinned_and_hashed(lock):
    entries = _entries(lock)
    assert entries
    for req, options in entries:
        assert PIN.fullmatch(req), f"{lock}: {req!r} is not pinned with =="
        assert options and all(HASH.fullmatch(o) for o in options), f"{lock}: {req} has no hashes"
    pins = _pins(lock)
    assert len(pins) == len(entries)  # nothing pinned twice
    if "torch" in pins:
        assert pins["torch"] == "2.13.0+cpu"  # an unpinned variant becomes PyPI's CUDA build
    assert "--index-url" not in lock.read_text() and "--find-links" not in lock.read_text()


@pytest.mark.parametrize("model", envs.models())
def test_every_model_locks_its_requirements(model):
    d = envs.check_model(model)
    assert not (d / "constraints.txt").exists()  # the lock is the one source of exact pins
    lock = _pins(d / "requirements.lock")
    for line in (d / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert PIN.fullmatch(line), f"{d / 'requirements.txt'}: {line!r} is not pinned"
            name, version = line.split("==")
            name = name.split("[")[0]  # the lock pins the distribution (pip-compile --strip-extras)
            assert lock.get(_norm(name)) == version, name  # the lock agrees with every direct pin
    assert lock["torch"] == "2.13.0+cpu"
    assert "setuptools" in lock  # torch needs it at run time; pip freeze used to drop it
    assert envs.checked_lock(model) == d / "requirements.lock"


def test_the_mmcv_build_locks_pin_the_build_toolchain():
    build = _pins(ROOT / "runner" / "mmcv-build" / "requirements.lock")
    assert build["torch"] == "2.13.0+cpu" and {"ninja", "wheel", "numpy"} <= set(build)
    (setuptools,) = _pins(ROOT / "runner" / "mmcv-build" / "setuptools.lock").items()
    assert setuptools[0] == "setuptools" and int(setuptools[1].split(".")[0]) < 70


# --------------------------------------------------------------------------- ensure() with real pip


def _toy_wheel(folder, version="1.0"):
    """A minimal pure-Python wheel (zoo_toy), written locally: pip installs it from find-links
    without any index. Returns (path, sha256)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"zoo_toy-{version}-py3-none-any.whl"
    info = f"zoo_toy-{version}.dist-info"
    files = {"zoo_toy/__init__.py": f"VERSION = {version!r}\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: zoo-toy\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: zoo-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    models = tmp_path / "models"
    d = models / "toy"
    d.mkdir(parents=True)
    (d / "model.yaml").write_text("name: toy\n")
    (d / "requirements.txt").write_text("# nothing to install\n")
    (d / "requirements.lock").write_text("# nothing to install\n")
    monkeypatch.setenv("ZOO_MODEL_DIRS", str(models))  # a model kept outside the zoo (zoo.registry)
    monkeypatch.setattr(envs, "VENVS", tmp_path / "venvs")
    # pip: only the local folder, never an index
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    (tmp_path / "wheels").mkdir()
    return d


def test_install_command_requires_hashes_from_the_lock(tmp_path):
    cmd = [str(c) for c in envs.install_command(tmp_path / "python", tmp_path / "requirements.lock")]
    assert cmd[1:4] == ["-m", "pip", "install"]
    assert "--require-hashes" in cmd and cmd[cmd.index("--only-binary") + 1] == ":all:"
    assert cmd[cmd.index("-r") + 1] == str(tmp_path / "requirements.lock")
    assert "-c" not in cmd and not any("requirements.txt" in c for c in cmd)


def test_env_is_installed_from_the_hashed_lock(fake_model, tmp_path):
    _, sha = _toy_wheel(tmp_path / "wheels")
    (fake_model / "requirements.txt").write_text("zoo-toy==1.0\n")
    (fake_model / "requirements.lock").write_text(f"zoo-toy==1.0 \\\n    --hash=sha256:{sha}\n")
    py = envs.ensure("toy")
    site = list((envs.VENVS / "toy" / "lib").glob("python3*/site-packages/zoo_toy/__init__.py"))
    assert py.exists() and site and envs.is_current("toy")


def test_a_tampered_wheel_is_refused(fake_model, tmp_path):
    _, sha = _toy_wheel(tmp_path / "wheels")
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    (fake_model / "requirements.txt").write_text("zoo-toy==1.0\n")
    (fake_model / "requirements.lock").write_text(f"zoo-toy==1.0 --hash=sha256:{wrong}\n")
    with pytest.raises(envs.EnvError, match="installing .*requirements.lock failed"):
        envs.ensure("toy")
    assert not envs.is_current("toy")
    assert not list((envs.VENVS / "toy" / "lib").glob("python3*/site-packages/zoo_toy"))


@pytest.mark.parametrize("lock, message", [
    ("zoo-toy==1.0\n", "no sha256 --hash"),
    ("zoo-toy>=1.0 --hash=sha256:" + "a" * 64 + "\n", "not an exact pin"),
    ("zoo-toy==0.9 --hash=sha256:" + "a" * 64 + "\n", "stale, zoo-toy==1.0 of requirements.txt"),
    ("torch==2.13.0 --hash=sha256:" + "a" * 64 + "\n", "not the CPU build"),
])
def test_a_bad_lock_is_a_one_line_error_before_any_install(fake_model, lock, message):
    (fake_model / "requirements.txt").write_text("zoo-toy==1.0\n")
    (fake_model / "requirements.lock").write_text(lock)
    with pytest.raises(envs.EnvError, match=re.escape(message)) as err:
        envs.ensure("toy")
    assert "\n" not in str(err.value)
    assert not (envs.VENVS / "toy").exists()  # refused before creating anything


def test_missing_lock(fake_model):
    (fake_model / "requirements.lock").unlink()
    with pytest.raises(envs.EnvError, match=r"requirements.lock: missing \(generate it: python3 runner/lock.py toy\)"):
        envs.ensure("toy")


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


def test_fingerprint_covers_the_lock(fake_model):
    first = envs.fingerprint("toy")
    (fake_model / "requirements.lock").write_text("# nothing to install, regenerated\n")
    assert envs.fingerprint("toy") != first
    assert "requirements.lock" in envs.FINGERPRINT_FILES


def test_unknown_model_and_missing_requirements(fake_model):
    with pytest.raises(envs.EnvError, match="unknown model 'nope'.*toy"):
        envs.ensure("nope")
    (fake_model / "requirements.txt").unlink()
    with pytest.raises(envs.EnvError, match="requirements.txt: missing"):
        envs.ensure("toy")


def test_failed_install_leaves_no_stamp(fake_model):
    (fake_model / "requirements.txt").write_text("definitely-not-a-package-zoo-test==0.0.0\n")
    (fake_model / "requirements.lock").write_text(
        "definitely-not-a-package-zoo-test==0.0.0 --hash=sha256:" + "b" * 64 + "\n")
    with pytest.raises(envs.EnvError, match="installing .*requirements.lock failed"):
        envs.ensure("toy")
    assert not envs.is_current("toy")


def test_lock_script_unknown_target_is_a_one_line_error():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(ROOT / "runner" / "lock.py"), "nosuch"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown lock target 'nosuch' (models: " + ", ".join(envs.models())
        + "; or mmcv-build, locktools)"]


@pytest.mark.parametrize("lock, stale", [
    ("zoo-toy==1.0 --hash=sha256:" + "a" * 64 + "\n", False),   # the lock pins the distribution, extras stripped
    ("zoo-toy==0.9 --hash=sha256:" + "a" * 64 + "\n", True),
])
def test_a_requirement_with_extras_is_matched_by_its_distribution(fake_model, lock, stale):
    """requirements.txt `ray[client]==2.60.0` is the lock's `ray==2.60.0` (pip-compile --strip-extras)."""
    (fake_model / "requirements.txt").write_text("zoo-toy[extra]==1.0\n")
    (fake_model / "requirements.lock").write_text(lock)
    if stale:
        with pytest.raises(envs.EnvError, match=re.escape("stale, zoo-toy==1.0 of requirements.txt")):
            envs.checked_lock("toy")
    else:
        assert envs.checked_lock("toy") == fake_model / "requirements.lock"


def test_a_linked_environment_is_used_while_current_and_never_recreated(fake_model):
    """A model whose requirements and lock are byte-identical to another's has the same fingerprint:
    its environment may be a link to that one's (used as is); once it is not current, the link is
    refused in one line, never recreated (venv --clear through it would empty the other one)."""
    py = envs.ensure("toy")
    twin = fake_model.parent / "twin"
    twin.mkdir()
    (twin / "model.yaml").write_text("name: twin\n")
    for name in ("requirements.txt", "requirements.lock"):
        (twin / name).write_bytes((fake_model / name).read_bytes())
    (envs.VENVS / "twin").symlink_to(envs.VENVS / "toy", target_is_directory=True)
    assert envs.fingerprint("twin") == envs.fingerprint("toy") and envs.is_current("twin")
    assert envs.ensure("twin") == envs.VENVS / "twin" / "bin" / "python"
    (twin / "requirements.txt").write_text("# the twin's own now\n")
    assert not envs.is_current("twin")
    with pytest.raises(envs.EnvError, match=r"twin: a link to .*toy that is not current for twin") as err:
        envs.ensure("twin")
    assert "\n" not in str(err.value)
    with pytest.raises(envs.EnvError, match="a link to"):
        envs.ensure("twin", force=True)
    assert envs.is_current("toy") and py.exists()  # the linked environment is untouched


def test_zoo_venvs_names_the_environments_folder(tmp_path):
    import os
    import subprocess
    import sys

    def python_of_unetpp(env: dict) -> str:
        code = "from runner import envs; print(envs.env_python('unetpp'))"
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env=env).stdout.strip()

    base = {k: v for k, v in os.environ.items() if k != "ZOO_VENVS"}
    assert python_of_unetpp(base) == str(ROOT / ".venvs" / "unetpp" / "bin" / "python")
    assert python_of_unetpp({**base, "ZOO_VENVS": str(tmp_path)}) == str(tmp_path / "unetpp" / "bin" / "python")
