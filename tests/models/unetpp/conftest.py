"""Fixtures for the UNet++ tests (run inside the unetpp environment: torch, onnxruntime, cv2)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.zootest import result_files  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parents[3]
MODEL_DIR = ROOT / "models" / "unetpp"
SHARED = Path(os.environ.get("ZOO_SHARED", ROOT.parent / "shared"))
SHARED_DSB = SHARED / "datasets" / "dsb2018"
BUILTIN = ROOT / "zoo" / "samples" / "dsb2018"  # the DSB2018 family's built-in sample
BUILTIN_IDS = BUILTIN / "builtin_ids.txt"


@pytest.fixture(scope="session")
def shared_dsb() -> Path:
    if not (SHARED_DSB / "stage1_train").is_dir():
        pytest.skip(f"the full DSB2018 val split is not available at {SHARED_DSB} (../shared is optional)")
    return SHARED_DSB


@pytest.fixture(scope="session")
def builtin_result(run_zoo, tmp_path_factory) -> dict:
    """One real run on the built-in data (ONNX Runtime, batch sizes 1, 4, 16)."""
    out = tmp_path_factory.mktemp("results")
    proc = run_zoo("run", "--model", "unetpp", "--batch-sizes", "1,4,16", "--iters", "3", "--warmup", "1",
                   "--out", out)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip().splitlines()[-1])
    return {"path": path, "record": json.loads(path.read_text()), "out": out}


def copy_dataset(ids: list[str], dest: Path, src: Path = BUILTIN) -> Path:
    """Copy some built-in ids into dest/stage1_train (to damage them in bad-input tests)."""
    for i in ids:
        shutil.copytree(src / "stage1_train" / i, dest / "stage1_train" / i)
    (dest / "ids.txt").write_text("\n".join(ids) + "\n")
    return dest


def builtin_ids() -> list[str]:
    return [line.strip() for line in BUILTIN_IDS.read_text().splitlines() if line.strip()]


