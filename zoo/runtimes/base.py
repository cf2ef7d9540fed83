"""The runtime interface: compile -> load -> infer (numpy in, numpy out) -> close, and the facts
every other part of the zoo reads from a runtime class instead of keeping its own copy (the
registry, zoo.runtimes.RUNTIMES, is the list of these classes):

  name, device_type, accelerator    what --runtime names, the device it runs on (the matrix's
                                    device), the Ray resource a job or shard of it takes;
  precisions, calibrated_precisions, converted_precisions
                                    what --precision may ask of it, which of those compile with
                                    the calibration set, which convert the graph without one;
  runs_onnx_graph                   it runs the exported ONNX graph (so a graph edit reaches it);
  quantize()                        the quantize hook: the graph of a calibrated or converted
                                    precision, made by the zoo.quant module (or tool) it uses;
  peak_precisions, peak_seconds()   the CPU peak kernels it measures for zoo.peaks;
  diagnosed, diagnose_note, diagnose_auto()
                                    what `python -m zoo diagnose` does with it.

Timing belongs to the harness (zoo.pipeline), not to runtimes. Runtime quirks stay inside a
runtime's own module; model code never branches on the runtime. Standard library only at import
(numpy and the engines are imported where used): the host's invoke tasks, the matrix and the
report read these facts without a model environment."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np

# Every precision name the zoo knows, in the order every listing shows them (--precision's
# choices, the matrix, the peaks, the report). A runtime runs some of them (Runtime.precisions);
# a runtime that names another is refused when it is registered.
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# Precisions whose arithmetic is integer: their rates are operations per second (GOP/s), not FLOP/s.
INTEGER_PRECISIONS = ("int8",)


def rate_unit(precision: str) -> str:
    """The unit of a rate at `precision`: GOP/s for an integer precision, else GFLOP/s."""
    return "GOP/s" if precision in INTEGER_PRECISIONS else "GFLOP/s"


@dataclass
class ModelArtifacts:
    """What a runtime may compile from: the exported ONNX file and/or the PyTorch module."""
    onnx_path: Path | None
    input_names: list[str]
    output_names: list[str]
    torch_module: Any = None
    key: str = ""                     # hash identifying weights + options + export settings
    # int8 (and other calibrated precisions): zoo.quant.calibration_set.Calibration, and the ONNX node
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

    # The precisions whose compilation needs calibration samples (ModelArtifacts.calibration):
    # quantize() makes their graph from them, --keep-fp32 and the --calib-* options apply.
    calibrated_precisions: ClassVar[tuple[str, ...]] = ("int8",)
    # The precisions whose graph quantize() converts without calibration (a float16 copy):
    # --keep-fp32 applies to them too.
    converted_precisions: ClassVar[tuple[str, ...]] = ()

    # zoo.peaks: the precisions whose CPU peak this runtime's own kernels measure (peak_seconds),
    # the package they need installed (its version keys the peak cache), how a kernel is named
    # (op -> label; default '<name> <op>'), and where its kernels come among a precision's
    # candidates (lower first; part of the peak cache's key). A runtime that inherits its parent's
    # peak_seconds measures nothing of its own: its kernels are its parent's.
    peak_precisions: ClassVar[tuple[str, ...]] = ()
    package: ClassVar[str | None] = None
    peak_op_labels: ClassVar[dict[str, str]] = {}
    peak_rank: ClassVar[int] = 100

    # zoo.diagnose: whether `python -m zoo diagnose` diagnoses this runtime's calibrated precision
    # (its per-layer table and sensitivity ranking are ONNX Runtime's QDQ graphs of the exported
    # model: a diagnosis of a runtime that quantizes that graph), and what diagnose says first
    # when those graphs are not the runtime's own (None: nothing).
    diagnosed: ClassVar[bool] = False
    diagnose_note: ClassVar[str | None] = None

    def __init__(self, threads: int | None = None, precision: str = "fp32"):
        self.threads = threads or default_threads()
        self.precision = precision
        self.compiled: Compiled | None = None

    @classmethod
    def needs_calibration(cls, precision: str) -> bool:
        return precision in cls.calibrated_precisions

    @classmethod
    def reads_keep_fp32(cls, precision: str) -> bool:
        """Whether --keep-fp32 applies at `precision`: quantize() makes its graph."""
        return cls.needs_calibration(precision) or precision in cls.converted_precisions

    def quantize(self, artifacts: ModelArtifacts, cache: Path) -> tuple[Path | None, dict]:
        """The quantize hook: (the model file this runtime compiles at self.precision, what the
        record keeps about how it was made). A calibrated precision's graph is quantized, a
        converted one's converted, by the runtime's zoo.quant module or tool (cached); any other
        precision compiles the exported graph as it is (and records nothing)."""
        return artifacts.onnx_path, {}

    @classmethod
    def peak_seconds(cls, kernel, precision: str, threads: int, repeats: int, budget_s: float) -> tuple[float, str]:
        """The peak hook (zoo.peaks): the best seconds of one call of `kernel` (a zoo.peaks.Kernel:
        a MatMul or 3x3 Conv of its size; its inputs and ONNX graph: zoo.peak_kernels) at `precision`
        on `threads` threads, and what ran (read back from the runtime: a kernel that did not run the
        precision asked is a ZooError)."""
        from zoo.errors import ZooError
        raise ZooError(f"{cls.name}: measures no peak kernel")

    @classmethod
    def diagnose_auto(cls, export: dict, calibration, judge, x: np.ndarray, input_name: str, by: str,
                      tolerance: float) -> dict | None:
        """The diagnose hook of --auto: this runtime's own accuracy-controlled quantization of the
        exported model (`export`) within `tolerance`, validated on the samples `x` by judge.score
        (`by`: metric or fidelity), as the report's "auto" block; None: diagnose's own loop
        (zoo.diagnose.auto_keep: the ranked units kept in fp32 one at a time)."""
        return None

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
