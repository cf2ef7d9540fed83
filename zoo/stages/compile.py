"""Stage 4, compile: the runtime builds its executable model from the exported graph (or takes
the PyTorch module), cached by the ONNX file's hash, and loads it."""
from __future__ import annotations

from pathlib import Path

from zoo.runtimes import ModelArtifacts


def compile_runtime(cfg, runtime_cls, manifest, export: dict, module, cache: Path):
    """The loaded runtime (the caller closes it)."""
    rt = runtime_cls(cfg.threads, cfg.precision)
    arts = ModelArtifacts(onnx_path=Path(export["path"]), input_names=[manifest.input["name"]],
                          output_names=[manifest.output["name"]], torch_module=module, key=export["onnx_sha256"])
    rt.compile(arts, cache)
    rt.load()
    return rt
