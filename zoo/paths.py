"""Where the zoo keeps things: repo root, schema, models, and the cache (ZOO_CACHE)."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "schema"
MODELS_DIR = ROOT / "models"


def cache_dir() -> Path:
    """Cache for downloads, exported/compiled models and prepared datasets.

    `ZOO_CACHE` when set (the Docker image sets /cache), else `<repo>/work/cache`. The value
    used is recorded in each result's runtime settings."""
    return Path(os.environ.get("ZOO_CACHE") or ROOT / "work" / "cache").resolve()
