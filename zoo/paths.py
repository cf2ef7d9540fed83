"""Where the zoo keeps things: repo root, schema, models (+ ZOO_MODEL_DIRS), the shared built-in
samples, and the cache (ZOO_CACHE). Defined here once; runner/__init__.py re-exports them."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "schema"
MODELS_DIR = ROOT / "models"
# The built-in samples, one folder per dataset family (zoo/samples/README.md): shared by every model
# of the family, wherever it lives, and inside every image (core.Dockerfile copies zoo/).
SAMPLES_DIR = ROOT / "zoo" / "samples"


def model_dirs() -> list[Path]:
    """Folders holding `<name>/model.yaml`: the zoo's models/, then each folder listed in
    ZOO_MODEL_DIRS (os.pathsep-separated): the plug point for models kept outside the zoo (a
    model there names its adapter as `<name>.<module>:<Class>`, imported from that folder)."""
    extra = [Path(p).resolve() for p in os.environ.get("ZOO_MODEL_DIRS", "").split(os.pathsep) if p]
    return [MODELS_DIR, *extra]


def builtin_data_path(model_dir: Path, given: str) -> Path:
    """A path of a manifest's `data.builtin` (the sample's folder, its ids files): one that starts
    with `zoo/samples/` is the zoo's shared sample (SAMPLES_DIR), the same for a model of models/
    and one of ZOO_MODEL_DIRS; any other is relative to the model's folder."""
    parts = Path(given).parts
    if parts[:2] == ("zoo", "samples"):
        return SAMPLES_DIR.joinpath(*parts[2:])
    return model_dir / given


def cache_dir() -> Path:
    """Cache for downloads, exported/compiled models and prepared datasets.

    `ZOO_CACHE` when set (the Docker image sets /cache), else `<repo>/work/cache`. The value
    used is recorded in each result's runtime settings."""
    return Path(os.environ.get("ZOO_CACHE") or ROOT / "work" / "cache").resolve()
