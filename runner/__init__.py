"""Host-side meta-runner: environments, images, validation of results, reports.

Nothing here imports torch or a model: it runs in the small host environment
(`requirements.txt`) and drives each model in its own environment or image. The repository's
paths are zoo.paths' (re-exported here); which models there are, zoo.registry's.
"""
from zoo.paths import MODELS_DIR, ROOT, SCHEMA_DIR

__all__ = ["MODELS_DIR", "ROOT", "SCHEMA_DIR"]
