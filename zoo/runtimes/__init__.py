"""Runtime registry: name -> class. Selecting an unavailable runtime is an error, never a fallback."""
from __future__ import annotations

from zoo.errors import ZooError
from zoo.runtimes.ascend_rt import AscendRuntime
from zoo.runtimes.base import Compiled, ModelArtifacts, Runtime
from zoo.runtimes.onnxruntime_rt import OnnxRuntime, OnnxRuntimeCuda, OnnxRuntimeTensorRT
from zoo.runtimes.openvino_rt import OpenVinoRuntime
from zoo.runtimes.torch_rt import TorchRuntime

RUNTIMES: dict[str, type[Runtime]] = {cls.name: cls for cls in (OnnxRuntime, OnnxRuntimeCuda, OnnxRuntimeTensorRT, OpenVinoRuntime,
                                                        TorchRuntime, AscendRuntime)}


def get_runtime(name: str) -> type[Runtime]:
    try:
        cls = RUNTIMES[name]
    except KeyError:
        raise ZooError(f"unknown runtime {name!r} (known: {', '.join(sorted(RUNTIMES))})") from None
    reason = cls.unavailable_reason()
    if reason:
        raise ZooError(f"runtime {name!r} is not available: {reason}")
    return cls


__all__ = ["RUNTIMES", "get_runtime", "Runtime", "ModelArtifacts", "Compiled"]
