"""Host-side meta-runner: environments, images, validation of results, reports.

Nothing here imports torch or a model: it runs in the small host environment
(`requirements.txt`) and drives each model in its own environment or image.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
SCHEMA_DIR = ROOT / "schema"
