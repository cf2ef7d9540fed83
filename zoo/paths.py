"""Where the zoo keeps things: repo root, schema, models (+ ZOO_MODEL_DIRS), and the cache (ZOO_CACHE)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "schema"
MODELS_DIR = ROOT / "models"


def model_dirs() -> list[Path]:
    """Folders holding `<name>/model.yaml`: the zoo's models/, then each folder listed in
    ZOO_MODEL_DIRS (os.pathsep-separated): the plug point for models kept outside the zoo (a
    model there names its adapter as `<name>.<module>:<Class>`, imported from that folder)."""
    extra = [Path(p).resolve() for p in os.environ.get("ZOO_MODEL_DIRS", "").split(os.pathsep) if p]
    return [MODELS_DIR, *extra]


def cache_dir() -> Path:
    """Cache for downloads, exported/compiled models and prepared datasets.

    `ZOO_CACHE` when set (the Docker image sets /cache), else `<repo>/work/cache`. The value
    used is recorded in each result's runtime settings."""
    return Path(os.environ.get("ZOO_CACHE") or ROOT / "work" / "cache").resolve()
