"""What a model directory provides: a ModelAdapter. It is stateless: every method's result depends
on the resolved options and its arguments only, so the run may call them in any order, from any
thread, and a saved run can be re-scored with a fresh adapter.

  build()                      the torch.nn.Module (weights not loaded)
  load_weights(module, path)   strict load with the upstream key names (zoo.checkpoints.load_strict)
  preprocess(sample)           one zoo.datasets Sample -> (model input CHW float32, meta)
  postprocess(output, meta)    one sample's main output + its meta -> a prediction (zoo.predictions)
  target(sample)               what the metrics compare the prediction with (default: the label)
  metrics(source)              the protocols' metrics (zoo.metrics), fed (prediction, target)

The dataset itself is not the adapter's: the manifest names a family (zoo.datasets) and the run
opens it. The shared run (zoo.run) drives any adapter; adapters hold no runtime or timing code."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from zoo.options import resolve_options


class ModelAdapter(ABC):
    # The exported graph's spatial axes are dynamic (inputs of different sizes, e.g. a keep-ratio
    # resize without padding); such a model can only batch one sample at a time.
    dynamic_spatial: bool = False
    # Options that do not change the exported graph (e.g. an output folder for drawings): kept out
    # of the export cache key.
    run_only_options: tuple[str, ...] = ()

    def __init__(self, manifest, **overrides):
        self.manifest = manifest
        # Declared in the manifest (default, type, allowed values) and checked before any work;
        # read-only from here on (an adapter keeps no state).
        self.options = MappingProxyType(resolve_options(manifest.name, manifest.model["options"],
                                                        {k: v for k, v in overrides.items() if v is not None}))

    @property
    def variant(self) -> str:
        """The options that change numerics (the run-only ones, such as output files, left out):
        with the model, runtime, device and precision it keys a run in compare and report."""
        return ",".join(f"{k}={v}" for k, v in self.export_options().items())

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
        """Strict load with upstream key names (zoo.checkpoints.load_strict)."""

    def checkpoint_payload(self, module) -> dict:
        """What a checkpoint file of this model holds (the inverse of load_weights), e.g. for a
        random-weight checkpoint that measures speed without the official file."""
        return module.state_dict()

    @abstractmethod
    def preprocess(self, sample) -> tuple[np.ndarray, Any]:
        """One Sample (zoo.datasets.base) -> (model input, CHW float32; meta for postprocess)."""

    @abstractmethod
    def postprocess(self, output: np.ndarray, meta: Any):
        """One sample's main output (the batch row) and its meta -> its prediction: a dict of
        named 2-D maps or zoo.predictions.Detections."""

    def target(self, sample) -> Any:
        """What the metrics compare a prediction with (from the label; the image may be None)."""
        return sample.label

    @abstractmethod
    def metrics(self, source) -> list:
        """The metrics (zoo.metrics) of the manifest's protocols for this source."""

    def check_source(self, source) -> None:
        """Refuse a source the options cannot run on (one-line ZooError); called before any work."""

    def edit_onnx(self, model, module) -> dict | None:
        """Optional model-specific edit of the exported onnx.ModelProto, in place (e.g. a guide's
        weight patch), given the loaded PyTorch module. Return a description of what changed
        (recorded in the result), or None for no edit."""
        return None

    def export_edit_key(self) -> str:
        """Identifies the edit `edit_onnx` would make (part of the export cache key), "" for none."""
        return ""
