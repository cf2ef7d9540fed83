"""The runtime registry: name -> Runtime class, each class stating its facts (zoo.runtimes.base:
device, precisions, calibration, peak kernels, quantize and diagnose hooks). Everything that
lists runtimes or precisions reads them here: --precision's choices and the calibration options
(zoo.stages.config), the matrix (runner.matrix), the peaks (zoo.peaks), diagnose (zoo.diagnose)
and the report (runner.report). Selecting an unavailable runtime is an error, never a fallback.

The order of RUNTIMES is the order every listing shows (the matrix's jobs, --runtime's help).

ZOO_RUNTIME_PLUGINS (os.pathsep-separated Python files) is the plug point for runtimes kept
outside the zoo, as ZOO_MODEL_DIRS is for models: each file defines `RUNTIMES`, a list of Runtime
subclasses, registered by their `name` (a name the zoo already has is an error, and so is a
precision the zoo does not know) after the built-in ones; `registry()` and `get_runtime()` load
them, so a plug-in runtime is listed wherever the registry is read.

Standard library only at import (the runtime modules import numpy and their engines where they
use them): the host's tasks, matrix and report import this without a model environment."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from zoo.errors import ZooError
from zoo.runtimes.ascend_rt import AscendRuntime
from zoo.runtimes.base import PRECISIONS, Compiled, ModelArtifacts, Runtime, rate_unit
from zoo.runtimes.onnxruntime_rt import OnnxRuntime, OnnxRuntimeCuda, OnnxRuntimeTensorRT
from zoo.runtimes.openvino_rt import OpenVinoRuntime
from zoo.runtimes.torch_rt import TorchRuntime

RUNTIMES: dict[str, type[Runtime]] = {cls.name: cls for cls in (OnnxRuntime, OpenVinoRuntime, TorchRuntime,
                                                               OnnxRuntimeCuda, OnnxRuntimeTensorRT, AscendRuntime)}
DEFAULT_RUNTIME = "onnxruntime"


def fact_problem(cls: type[Runtime]) -> str | None:
    """What is wrong with a runtime class's facts (one line), or None: every precision it names
    is one of PRECISIONS, its calibrated, converted and peak precisions are ones it runs."""
    named = {"precisions": cls.precisions, "calibrated_precisions": cls.calibrated_precisions,
             "converted_precisions": cls.converted_precisions, "peak_precisions": cls.peak_precisions}
    for what, precisions in named.items():
        unknown = [p for p in precisions if p not in PRECISIONS]
        if unknown:
            return f"runtime {cls.name!r}: {what} names {unknown[0]!r}, not a precision (known: {', '.join(PRECISIONS)})"
    if "peak_seconds" in vars(cls):  # its own kernels: the precisions they measure are ones it runs
        extra = [p for p in cls.peak_precisions if p not in cls.precisions]
        if extra:
            return f"runtime {cls.name!r}: peak_precisions names {extra[0]!r}, which it does not run"
    return None


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
            problem = fact_problem(cls)
            if problem:
                raise ZooError(f"{entry}: {problem}")
        for cls in classes:
            RUNTIMES[cls.name] = cls
        _LOADED.add(name)


_LOADED: set[str] = set()


def registry() -> dict[str, type[Runtime]]:
    """Every runtime, the built-in ones then ZOO_RUNTIME_PLUGINS' (loaded now), by name, whether
    or not it can run here (get_runtime says that)."""
    _plugins()
    return dict(RUNTIMES)


def runtime_class(name: str) -> type[Runtime]:
    """The registered runtime `name` (available here or not); an unknown name is a one-line error."""
    _plugins()
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ZooError(f"unknown runtime {name!r} (known: {', '.join(sorted(RUNTIMES))})") from None


def get_runtime(name: str) -> type[Runtime]:
    """The runtime `name`, which must be usable here (its engine installed)."""
    cls = runtime_class(name)
    reason = cls.unavailable_reason()
    if reason:
        raise ZooError(f"runtime {name!r} is not available: {reason}")
    return cls


def peak_runtimes() -> list[type[Runtime]]:
    """The runtimes whose own kernels zoo.peaks measures (each defines peak_seconds; one that
    inherits it adds no kernel), in their peak_rank order (then the registry's)."""
    own = [cls for cls in registry().values() if "peak_seconds" in vars(cls) and cls.peak_precisions]
    return sorted(own, key=lambda cls: cls.peak_rank)


def diagnosed_runtimes() -> list[str]:
    """The runtimes `python -m zoo diagnose` takes, in the registry's order."""
    return [name for name, cls in registry().items() if cls.diagnosed]


__all__ = ["RUNTIMES", "PRECISIONS", "DEFAULT_RUNTIME", "registry", "runtime_class", "get_runtime", "peak_runtimes",
           "diagnosed_runtimes", "fact_problem", "rate_unit", "Runtime", "ModelArtifacts",
           "Compiled"]
