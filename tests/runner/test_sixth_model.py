"""A sixth model, added without editing a file of the repository: written by this test in a
temporary folder and registered only through ZOO_MODEL_DIRS (zoo.registry), it goes through the
user's tasks like the five: `invoke models`, `setup`, `run` on the built-in DSB2018 sample (the
family's, zoo/samples/dsb2018), `score`, `test --model` (its own tests, in its folder), `lock`'s
targets, `build --dry-run` and `matrix --dry-run`; CI's model matrix is the registry's list.

The model: a 2-level U-Net on DSB2018 with its own small adapter (zoo.adapter, the DSB2018 source,
zoo.metrics.binary), a random checkpoint made here with its sha256 in the manifest, a Dockerfile,
and requirements.txt/requirements.lock byte-identical to unetpp's. Its environment is not built
(1 GB): the fingerprint of an environment is the content of those files, so unetpp's environment is
current for it, and ZOO_VENVS points the tasks at a folder of this test where `sixth` is a link to
`.venvs/unetpp` (runner.envs uses a current link as it is and never recreates one). Host test; it
needs `.venvs/unetpp` (skipped, saying so, without it)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runner import envs
from zoo.paths import SAMPLES_DIR

ROOT = Path(__file__).resolve().parents[2]
UNETPP = ROOT / "models" / "unetpp"
NAME = "sixth"

MODEL_PY = '''\
"""A 2-level U-Net: two encoder levels, one skip connection, a 1x1 head (one logit per pixel)."""
import torch
import torch.nn as nn


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TwoLevelUNet(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.enc1, self.enc2 = block(3, width), block(width, 2 * width)
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec1 = block(3 * width, width)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        return self.head(self.dec1(torch.cat([e1, self.up(e2)], 1)))
'''

ADAPTER_PY = '''\
"""sixth: a 2-level U-Net on the DSB2018 family (its reader, built-in sample and binary IoU are the zoo's)."""
import numpy as np

from zoo.adapter import ModelAdapter
from zoo.metrics.binary import BinaryIoU
from zoo.checkpoints import load_strict, read_checkpoint


class SixthAdapter(ModelAdapter):
    def build(self):
        from sixth.model import TwoLevelUNet
        return TwoLevelUNet(self.options["width"])

    def load_weights(self, module, path):
        load_strict(module, read_checkpoint(path), path)

    def preprocess(self, sample):
        p = self.manifest.preprocess
        x = (sample.image.astype(np.float32) / 255.0 - np.float32(p["mean"])) / np.float32(p["std"])
        return np.ascontiguousarray(x.transpose(2, 0, 1)), None

    def target(self, sample):
        return sample.label > 127

    def postprocess(self, output, meta):
        return {"mask": np.asarray(output)[0] > 0}

    def metrics(self, source):
        desc = self.manifest.reference["protocols"]["iou"]["description"]
        return [BinaryIoU("iou", desc, key="mask", aggregate="image")]
'''

OWN_TEST_PY = '''\
"""sixth's own test: its network on its checkpoint, strictly loaded, in the model's environment."""
import os
from pathlib import Path

import torch

from zoo.manifest import load_manifest


def test_sixth_own_forward_on_its_checkpoint():
    manifest = load_manifest("sixth")
    adapter = manifest.adapter()
    net = adapter.build().eval()
    adapter.load_weights(net, manifest.dir / manifest.weights["checkpoints"]["random"]["path"])
    with torch.no_grad():
        out = net(torch.zeros(2, 3, 96, 96))
    assert tuple(out.shape) == (2, 1, 96, 96)
    Path(os.environ["SIXTH_MARKER"]).write_text(f"ran in {os.environ.get('VIRTUAL_ENV') or __import__('sys').prefix}")
    assert os.environ.get("SIXTH_FAIL") != "1", "failing on purpose (SIXTH_FAIL=1)"
'''

CHECKPOINT_PY = '''\
import sys
import torch
sys.path.insert(0, sys.argv[1])
from sixth.model import TwoLevelUNet
torch.manual_seed(6)
torch.save(TwoLevelUNet(8).state_dict(), sys.argv[2])
'''

DOCKERFILE = '''\
# sixth: the model's part of its image, as the zoo's own (its lock, installed in a build stage).
ARG ZOO_BASE

FROM ${ZOO_BASE} AS install
COPY models/sixth/requirements.lock /tmp/
COPY runner/dockerfiles/build-inputs/ /tmp/build-inputs/
RUN zoo-install-lock /tmp/requirements.lock

FROM ${ZOO_BASE}
COPY --from=install /opt/venv/ /opt/venv/

CMD ["run", "--model", "sixth", "--out", "/results"]
'''


def manifest(sha256: str) -> dict:
    return {
        "name": NAME, "title": "sixth (test model): a 2-level U-Net, DSB2018 96x96", "task": "binary_segmentation",
        "adapter": "sixth.adapter:SixthAdapter", "upstream": {"repo": "none (a test model of this project)"},
        "model": {"options": {"width": {"default": 8, "type": "int", "min": 1, "max": 64,
                                        "help": "channels of the first level"}}},
        "weights": {"default": "random", "checkpoints": {"random": {
            "path": "sixth.pth", "sha256": sha256, "format": "raw state_dict (random, made by the test)"}}},
        "input": {"name": "image", "shape": [3, 96, 96], "dtype": "float32", "layout": "NCHW"},
        "output": {"name": "logits", "shape": [1, 96, 96]},
        "export": {"opset": 17, "dynamic_batch": True},
        "verify": {"batch_size": 2, "tolerance": {"fp32": {"rtol": 1.0e-4, "atol": 1.0e-5, "max_flip_fraction": 0.001}}},
        "data": {"family": "dsb2018", "layout": "stage1_train/<id>/images/<id>.png, stage1_train/<id>/masks/*.png",
                 "splits": {"evaluation": {"name": "val"}},
                 "builtin": {"path": "zoo/samples/dsb2018", "ids_file": "zoo/samples/dsb2018/builtin_ids.txt"},
                 "source": {"img_size": 96}},
        "preprocess": {"mean": 0.5, "std": 0.25},
        "benchmark": {"batch_sizes": [1, 2]},
        "reference": {"tolerance": 0.01, "protocols": {"iou": {
            "metric": "iou", "value": 0.5, "source": "none (random weights)",
            "description": "per-image IoU of logits > 0 vs mask > 127"}}},
    }


def repository_state() -> tuple[str, dict[str, str]]:
    """git status (untracked files too) and the sha256 of every file it lists: a change to a file
    that was already modified shows as a changed digest."""
    status = subprocess.run(["git", "status", "--porcelain=v1", "--untracked-files=all"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=True).stdout
    digests = {}
    for line in status.splitlines():
        path = ROOT / line[3:].split(" -> ")[-1].strip('"')
        if path.is_file():
            digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return status, digests


@pytest.fixture(scope="module")
def plug(tmp_path_factory):
    if not envs.is_current("unetpp"):
        pytest.skip(f"needs a current {envs.env_dir('unetpp')} (invoke setup --model unetpp): the sixth model "
                    f"runs in it")
    before = repository_state()
    tmp = tmp_path_factory.mktemp("sixth")
    folder = tmp / "plugins" / NAME
    (folder / "tests").mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "model.py").write_text(MODEL_PY)
    (folder / "adapter.py").write_text(ADAPTER_PY)
    (folder / "tests" / "test_sixth_own.py").write_text(OWN_TEST_PY)
    (folder / "Dockerfile").write_text(DOCKERFILE)
    for name in ("requirements.txt", "requirements.lock"):  # byte-identical: unetpp's environment is current for it
        shutil.copyfile(UNETPP / name, folder / name)
    python = envs.env_python("unetpp")
    subprocess.run([str(python), "-c", CHECKPOINT_PY, str(folder.parent), str(folder / "sixth.pth")], check=True,
                   timeout=300)
    sha = hashlib.sha256((folder / "sixth.pth").read_bytes()).hexdigest()
    (folder / "model.yaml").write_text(yaml.safe_dump(manifest(sha), sort_keys=False))
    venvs = tmp / "venvs"
    venvs.mkdir()
    (venvs / NAME).symlink_to(os.path.realpath(envs.env_dir("unetpp")), target_is_directory=True)
    env = {**os.environ, "ZOO_MODEL_DIRS": str(folder.parent), "ZOO_VENVS": str(venvs),
           "ZOO_CACHE": str(tmp / "cache"), "SIXTH_MARKER": str(tmp / "marker")}
    env.pop("SIXTH_FAIL", None)
    return {"tmp": tmp, "folder": folder, "venvs": venvs, "env": env, "before": before}


def invoke(plug, *args, extra_env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**plug["env"], **(extra_env or {})})


def test_listed_through_zoo_model_dirs_only(plug):
    proc = invoke(plug, "models", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert NAME in listed and {"unetpp", "erfnet", "fastscnn", "fcn8s", "nasfpn"} <= set(listed)
    table = invoke(plug, "models").stdout
    assert any(line.split()[:2] == [NAME, str(plug["folder"])] and "(ZOO_MODEL_DIRS)" in line
               for line in table.splitlines()), table
    without = {k: v for k, v in plug["env"].items() if k != "ZOO_MODEL_DIRS"}
    alone = subprocess.run([sys.executable, "-m", "invoke", "models", "--json"], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, env=without)
    assert NAME not in json.loads(alone.stdout)


def test_setup_reuses_the_linked_environment_and_lock_finds_its_files(plug):
    proc = invoke(plug, "setup", "--model", NAME)
    assert proc.returncode == 0, proc.stderr
    assert f"environment {plug['venvs'] / NAME} is up to date" in proc.stderr
    assert "creating environment" not in proc.stderr
    code = "import json; from runner import lock; print(json.dumps([list(map(str, t)) for t in lock._targets(['sixth'])]))"
    targets = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                             env=plug["env"])
    assert targets.returncode == 0, targets.stderr
    folder = plug["folder"]
    assert json.loads(targets.stdout) == [[str(folder / "requirements.txt"), str(folder / "requirements.lock"), NAME]]


def test_run_on_the_family_sample_then_score(plug):
    out = plug["tmp"] / "results"
    proc = invoke(plug, "run", "--model", NAME, "--batch-sizes", "1,2", "--iters", "2", "--warmup", "1",
                  "--time-budget", "1", "--no-peak", "--save-predictions", "--out", out)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (result,) = (out / NAME).glob("*.json")
    rec = json.loads(result.read_text())
    assert rec["status"] == "ok" and rec["model"]["name"] == NAME and rec["verify"]["passed"]
    dataset = rec["provenance"]["dataset"]
    assert dataset["builtin"] and dataset["name"] == "dsb2018" and dataset["num_samples"] == 16
    assert dataset["path"] == str(SAMPLES_DIR / "dsb2018")  # the family's sample, not a copy of the model's
    (acc,) = rec["accuracy"]
    assert acc["name"] == "iou" and 0.0 <= acc["value"] <= 1.0 and acc["consistent_across_batch_sizes"]
    assert f"accuracy iou: iou {acc['value']:.4f} on 16 samples" in proc.stdout
    score = invoke(plug, "score", result)
    assert score.returncode == 0, score.stderr[-2000:]
    assert "every figure equals the record's" in score.stdout


def test_its_own_tests_run_in_its_environment(plug):
    marker = Path(plug["env"]["SIXTH_MARKER"])
    marker.unlink(missing_ok=True)
    own = plug["folder"] / "tests"
    proc = invoke(plug, "test", "--model", NAME, "-k", "sixth_own")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert f"== {NAME} tests (tests/core {own}) in {plug['venvs'] / NAME}" in proc.stdout
    assert "1 passed" in proc.stdout and marker.read_text().startswith("ran in ")
    failing = invoke(plug, "test", "--model", NAME, "-k", "sixth_own", extra_env={"SIXTH_FAIL": "1"})
    assert failing.returncode == 1 and "error: invoke test: tests failed in: sixth" in failing.stderr, failing.stderr[-2000:]
    assert "failing on purpose" in failing.stdout


def test_build_dry_run_plans_its_image(plug):
    proc = invoke(plug, "build", "--model", NAME, "--dry-run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert str(plug["folder"] / "Dockerfile") in proc.stdout
    assert f"zoo/{NAME}-env:" in proc.stdout and f"MODEL={NAME}" in proc.stdout


def test_matrix_dry_run_lists_its_jobs(plug):
    proc = invoke(plug, "matrix", "--models", NAME, "--runtimes", "onnxruntime,torch", "--dry-run",
                  "--out", plug["tmp"] / "matrix")
    assert proc.returncode == 0, proc.stderr[-2000:]
    python = plug["venvs"] / NAME / "bin" / "python"
    for runtime in ("onnxruntime", "torch"):
        assert f"  {NAME}/{runtime}/fp32: {python} -m zoo run --model {NAME} --runtime {runtime}" in proc.stdout
    assert not (plug["tmp"] / "matrix").exists()  # a dry run starts nothing


def test_ci_matrix_is_the_registry():
    """CI's model jobs come from the registry's list (a first job prints it), never a hand list."""
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    jobs = ci["jobs"]
    assert jobs["model"]["needs"] == "models"
    assert jobs["model"]["strategy"]["matrix"] == {"model": "${{ fromJSON(needs.models.outputs.models) }}"}
    (step,) = [s for s in jobs["models"]["steps"] if s.get("id") == "list"]
    assert "python -m invoke models --json" in step["run"] and "GITHUB_OUTPUT" in step["run"]
    assert jobs["models"]["outputs"]["models"] == "${{ steps.list.outputs.models }}"


def test_no_file_of_the_repository_changed(plug):
    """Last: everything the sixth model needed is in its folder and this test's temporary folder."""
    assert repository_state() == plug["before"]
