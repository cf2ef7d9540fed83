"""What a model directory provides: a ModelAdapter (network, weights loading, dataset, metrics).

The shared pipeline (zoo.run) drives any adapter; adapters hold no runtime or timing code."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from zoo.options import resolve_options


class Dataset(ABC):
    """Samples in a fixed order. `read` does the I/O, `preprocess` the arithmetic, so the pipeline
    can time them separately. A missing or unreadable sample raises ZooError, never skips."""
    name: str
    root: Path
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    @abstractmethod
    def read(self, sample_id: str) -> Any: ...

    @abstractmethod
    def preprocess(self, raw: Any) -> tuple[np.ndarray, Any]:
        """-> (model input CHW float32, target for the metrics)"""

    @abstractmethod
    def provenance(self) -> dict:
        """The dataset block of the result's provenance (schema: provenance.dataset)."""


class Metric(ABC):
    name: str           # protocol id, e.g. "guide"
    metric: str         # headline figure, e.g. "iou"
    description: str = ""
    comparable: bool | None = None  # False: the value's protocol differs from the reference's
                                    # (e.g. another evaluation order): no pass/fail is claimed

    @abstractmethod
    def update(self, outputs: np.ndarray, targets: list) -> None: ...

    @abstractmethod
    def compute(self) -> dict:
        """All figures; must contain self.metric."""

    def per_class(self) -> list[dict] | None:
        """Per-class figures ([{"class": name, "iou": ...}, ...]) where the metric has classes."""
        return None


class ModelAdapter(ABC):
    # The exported graph's spatial axes are dynamic (inputs of different sizes, e.g. a keep-ratio
    # resize without padding); such a model can only batch one sample at a time.
    dynamic_spatial: bool = False
    # Options that do not change the exported graph (e.g. an output folder for drawings): kept out
    # of the export cache key.
    run_only_options: tuple[str, ...] = ()

    def __init__(self, manifest, **overrides):
        self.manifest = manifest
        # Declared in the manifest (default, type, allowed values) and checked before any work.
        self.options = resolve_options(manifest.name, manifest.model["options"],
                                       {k: v for k, v in overrides.items() if v is not None})

    @property
    def variant(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.options.items())

    def export_options(self) -> dict:
        """The options that shape the exported graph (part of the export cache key)."""
        return {k: v for k, v in self.options.items() if k not in self.run_only_options}

    def max_batch_size(self) -> int | None:
        """Largest batch the model's inputs allow (1 for dynamic spatial sizes), None for no limit."""
        return 1 if self.dynamic_spatial else None

    @abstractmethod
    def build(self):
        """The torch.nn.Module with the resolved options (weights not loaded)."""

    @abstractmethod
    def load_weights(self, module, path: Path) -> None:
        """Strict load with upstream key names (zoo.weights.load_strict)."""

    def checkpoint_payload(self, module) -> dict:
        """What a checkpoint file of this model holds (the inverse of load_weights), e.g. for a
        random-weight checkpoint that measures speed without the official file."""
        return module.state_dict()

    @abstractmethod
    def dataset(self, data: Path | None, ids_file: Path | None, limit: int | None, cache: Path) -> Dataset: ...

    @abstractmethod
    def metrics(self) -> list[Metric]: ...

    def edit_onnx(self, model) -> dict | None:
        """Optional model-specific edit of the exported onnx.ModelProto, in place (e.g. a guide's
        weight patch). Return a description of what changed (recorded in the result and part of
        the export cache key via `export_edit_key`), or None for no edit."""
        return None

    def export_edit_key(self) -> str:
        """Identifies the edit `edit_onnx` would make (part of the export cache key)."""
        return ""

    def decision(self, outputs: np.ndarray) -> np.ndarray:
        """The discrete prediction taken from outputs (parity counts flips of it)."""
        return outputs.argmax(1)
