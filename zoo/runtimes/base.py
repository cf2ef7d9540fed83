"""The runtime interface: compile -> load -> infer (numpy in, numpy out) -> close.

Timing belongs to the harness (zoo.pipeline), not to runtimes. Runtime quirks stay inside a
runtime's own module; model code never branches on the runtime."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


@dataclass
class ModelArtifacts:
    """What a runtime may compile from: the exported ONNX file and/or the PyTorch module."""
    onnx_path: Path | None
    input_names: list[str]
    output_names: list[str]
    torch_module: Any = None
    key: str = ""                     # hash identifying weights + options + export settings
    # int8 (and other calibrated precisions): zoo.quant.calibration.Calibration, and the ONNX node
    # names to leave in higher precision (--keep-fp32)
    calibration: Any = None
    keep_fp32: tuple[str, ...] = ()


@dataclass
class Compiled:
    path: Path | None
    cached: bool
    seconds: float
    extra: dict = field(default_factory=dict)


def default_threads() -> int:
    """Cores this process may use (affinity-aware), the default for intra-op threads."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Runtime(ABC):
    name: ClassVar[str]
    device_type: ClassVar[str] = "cpu"
    # Runs the exported ONNX graph (so an edit of that graph, e.g. a guide's weight patch, reaches
    # it); False for a runtime that runs the PyTorch module itself.
    runs_onnx_graph: ClassVar[bool] = True

    # The Ray resource a shard of this runtime takes one unit of (zoo.shard): "NPU", "GPU", or None
    # for a CPU runtime (CPU slots only).
    accelerator: ClassVar[str | None] = None

    # The precisions this runtime can run (--precision); another is a one-line error before any
    # work, never a silent fallback.
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def __init__(self, threads: int | None = None, precision: str = "fp32"):
        self.threads = threads or default_threads()
        self.precision = precision
        self.compiled: Compiled | None = None

    # The precisions whose compilation needs calibration samples (ModelArtifacts.calibration).
    calibrated_precisions: ClassVar[tuple[str, ...]] = ("int8",)

    @classmethod
    def needs_calibration(cls, precision: str) -> bool:
        return precision in cls.calibrated_precisions

    @classmethod
    def precision_problem(cls, precision: str) -> str | None:
        """None when this runtime runs `precision`, else why not (one line)."""
        if precision in cls.precisions:
            return None
        return f"runtime {cls.name} does not run {precision} (it runs: {', '.join(cls.precisions)})"

    def executed_precision(self) -> str:
        """The precision the compiled model actually executes (read back where the runtime says)."""
        return self.precision

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when usable here, else one line saying what is missing."""
        return None

    @classmethod
    @abstractmethod
    def version(cls) -> str: ...

    @abstractmethod
    def compile(self, artifacts: ModelArtifacts, cache: Path) -> Compiled: ...

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None:
        pass

    # Per-operator profiling (zoo.profile); runtimes that cannot profile keep these.
    profile_op_names: ClassVar[dict[str, str]] = {}  # the runtime's op types -> ONNX op types (FLOPs)

    def op_times(self, feeds: dict[str, np.ndarray], warmup: int, calls: int) -> dict[str, list[float]] | None:
        """{op type: [total ms, kernels]} over `calls` profiled calls after `warmup`, in a
        profiling session separate from the timed one; None when this runtime cannot profile."""
        return None

    def device_info(self) -> dict | None:
        """The accelerator this runtime runs on ({'type', 'name', 'count', 'details'}), None for
        the host CPU."""
        return None

    def settings(self) -> dict:
        s = {"threads": self.threads}
        if self.compiled:
            s.update(artifact=str(self.compiled.path) if self.compiled.path else None,
                     compile_cached=self.compiled.cached, compile_seconds=round(self.compiled.seconds, 3),
                     **self.compiled.extra)
        return s

    def __enter__(self):
        self.load()
        return self

    def __exit__(self, *exc):
        self.close()
