"""Runtime registry: name -> class. Selecting an unavailable runtime is an error, never a fallback.

ZOO_RUNTIME_PLUGINS (os.pathsep-separated Python files) is the plug point for runtimes kept
outside the zoo, as ZOO_MODEL_DIRS is for models: each file defines `RUNTIMES`, a list of Runtime
subclasses, registered by their `name` (a name the zoo already has is an error)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from zoo.errors import ZooError
from zoo.runtimes.ascend_rt import AscendRuntime
from zoo.runtimes.base import Compiled, ModelArtifacts, Runtime
from zoo.runtimes.onnxruntime_rt import OnnxRuntime, OnnxRuntimeCuda, OnnxRuntimeTensorRT
from zoo.runtimes.openvino_rt import OpenVinoRuntime
from zoo.runtimes.torch_rt import TorchRuntime

RUNTIMES: dict[str, type[Runtime]] = {cls.name: cls for cls in (OnnxRuntime, OnnxRuntimeCuda, OnnxRuntimeTensorRT, OpenVinoRuntime,
                                                        TorchRuntime, AscendRuntime)}


def _plugins() -> None:
    """Register the runtimes of the files in ZOO_RUNTIME_PLUGINS (once per file)."""
    for entry in filter(None, os.environ.get("ZOO_RUNTIME_PLUGINS", "").split(os.pathsep)):
        path = Path(entry).resolve()
        name = f"zoo_runtime_plugin_{abs(hash(str(path)))}"
        if name in _LOADED:
            continue
        if not path.is_file():
            raise ZooError(f"{entry}: ZOO_RUNTIME_PLUGINS names no such file")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ZooError(f"{entry}: the runtime plug-in cannot be loaded ({type(exc).__name__}: {exc})") from None
        classes = getattr(module, "RUNTIMES", None)
        if not isinstance(classes, (list, tuple)) or not all(isinstance(c, type) and issubclass(c, Runtime)
                                                              for c in classes):
            raise ZooError(f"{entry}: a runtime plug-in must define RUNTIMES, a list of zoo Runtime classes")
        for cls in classes:
            if cls.name in RUNTIMES and RUNTIMES[cls.name] is not cls:
                raise ZooError(f"{entry}: runtime {cls.name!r} is already defined")
            RUNTIMES[cls.name] = cls
        _LOADED.add(name)


_LOADED: set[str] = set()


def get_runtime(name: str) -> type[Runtime]:
    _plugins()
    try:
        cls = RUNTIMES[name]
    except KeyError:
        raise ZooError(f"unknown runtime {name!r} (known: {', '.join(sorted(RUNTIMES))})") from None
    reason = cls.unavailable_reason()
    if reason:
        raise ZooError(f"runtime {name!r} is not available: {reason}")
    return cls


__all__ = ["RUNTIMES", "get_runtime", "Runtime", "ModelArtifacts", "Compiled"]
