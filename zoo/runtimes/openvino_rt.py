"""OpenVINO on the CPU: the ONNX file read by OpenVINO, reshaped to a static batch and compiled
once per batch size (static shapes let the CPU plugin pick its best kernels), with the settings
that decide its speed made explicit and recorded:

- INFERENCE_NUM_THREADS = the run's threads (as every other runtime);
- PERFORMANCE_HINT = LATENCY and NUM_STREAMS = 1 by default: one request at a time, all threads
  on it -- the way the zoo times every runtime (THROUGHPUT would split the cores into streams that
  only pay off with several requests in flight);
- INFERENCE_PRECISION_HINT from --precision (fp32 -> f32, bf16, fp16 -> f16), always explicit: on
  CPUs with AMX/AVX512-BF16 the CPU plugin would otherwise run bf16 by default, which is another
  precision, not a faster fp32. The precision each compiled model executes is read back from it
  (its INFERENCE_PRECISION_HINT property) and must be the one asked for: a CPU without bf16
  support executes f32 instead, and the run stops with a one-line error rather than recording an
  fp32 speed as bf16 (or a bf16 one as fp32).
Override with ZOO_OPENVINO_HINT (LATENCY/THROUGHPUT), ZOO_OPENVINO_STREAMS."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from zoo.envinfo import cpu_flags_summary
from zoo.errors import ZooError, one_line
from zoo.profile import OPENVINO_TO_ONNX
from zoo.runtimes.base import Compiled, ModelArtifacts, Runtime


# --precision -> the CPU plugin's element type, and back
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


class OpenVinoRuntime(Runtime):
    name = "openvino"
    precisions = tuple(OV_PRECISION)

    def __init__(self, threads: int | None = None, precision: str = "fp32"):
        super().__init__(threads, precision)
        self.config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": os.environ.get("ZOO_OPENVINO_HINT", "LATENCY"),
            "NUM_STREAMS": int(os.environ.get("ZOO_OPENVINO_STREAMS", "1")),
            "INFERENCE_PRECISION_HINT": OV_PRECISION[self.precision],
        }
        self.executed: dict[int, str] = {}  # batch size -> the element type its compiled model runs
        self.requests: dict[int, object] = {}
        self.compile_seconds: dict[int, float] = {}

    @classmethod
    def unavailable_reason(cls):
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "the openvino package is not installed in this environment (pip install openvino)"
        return None

    @classmethod
    def version(cls) -> str:
        import openvino
        return openvino.__version__.split("-")[0]

    def compile(self, artifacts: ModelArtifacts, cache: Path) -> Compiled:
        import openvino as ov
        if artifacts.onnx_path is None:
            raise ZooError("openvino: no ONNX model to compile")
        self.core = ov.Core()
        self.cache_dir = Path(cache) / "compiled" / "openvino"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.core.set_property({"CACHE_DIR": str(self.cache_dir)})
        try:
            self.model = self.core.read_model(str(artifacts.onnx_path))
        except Exception as exc:
            raise ZooError(f"{artifacts.onnx_path}: OpenVINO cannot read the model ({one_line(exc)[:300]})") from None
        self.inputs, self.outputs = artifacts.input_names, artifacts.output_names
        self.compiled = Compiled(self.cache_dir, False, 0.0, {"config": self.config, "compile_seconds_per_batch": self.compile_seconds})
        return self.compiled

    def load(self) -> None:
        pass  # one compiled model per batch size, on first use

    def _request(self, shape: tuple[int, ...]):
        bs = int(shape[0])
        if bs not in self.requests:
            t0 = time.perf_counter()
            compiled = self._compile(shape, self.config)
            self.compile_seconds[bs] = round(time.perf_counter() - t0, 3)
            self.executed[bs] = self._check_precision(compiled, shape)
            self.compiled.seconds += self.compile_seconds[bs]
            self.requests[bs] = (compiled, compiled.create_infer_request())
        return self.requests[bs]

    def _compile(self, shape: tuple[int, ...], config: dict):
        """The model reshaped to the static `shape` and compiled for the CPU with `config`."""
        model = self.model.clone()
        model.reshape({self.inputs[0]: list(shape)})
        try:
            return self.core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise ZooError(f"OpenVINO cannot compile the model for {list(shape)} ({one_line(exc)[:300]})") from None

    def _check_precision(self, compiled, shape) -> str:
        """The element type the compiled model executes, which must be the one asked for."""
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")  # an openvino.Type
        got = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        want = OV_PRECISION[self.precision]
        if got != want:
            raise ZooError(f"openvino: asked for {self.precision} ({want}) but the CPU plugin compiled the "
                           f"{list(shape)} model to run {got} (this CPU: {cpu_flags_summary()}); no result written")
        return got

    def executed_precision(self) -> str:
        inverse = {v: k for k, v in OV_PRECISION.items()}
        kinds = {inverse.get(v, v) for v in self.executed.values()}
        return kinds.pop() if len(kinds) == 1 else self.precision

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds[self.inputs[0]]
        compiled, req = self._request(tuple(x.shape))
        req.infer({self.inputs[0]: x})
        return {name: req.get_tensor(compiled.output(name)).data.copy() for name in self.outputs}

    def close(self) -> None:
        self.requests.clear()

    profile_op_names = OPENVINO_TO_ONNX

    def op_times(self, feeds, warmup, calls):
        """The CPU plugin's performance counters (PERF_COUNT) of a second compilation for this
        shape, summed per node type over `calls` requests (nodes that did not run excluded)."""
        x = feeds[self.inputs[0]]
        req = self._compile(tuple(x.shape), {**self.config, "PERF_COUNT": True}).create_infer_request()
        for _ in range(warmup):
            req.infer({self.inputs[0]: x})
        out: dict[str, list[float]] = {}
        for _ in range(calls):
            req.infer({self.inputs[0]: x})
            for info in req.get_profiling_info():
                ms = info.real_time.total_seconds() * 1e3
                if ms <= 0:
                    continue  # optimised out / not executed
                acc = out.setdefault(str(info.node_type), [0.0, 0])
                acc[0] += ms
                acc[1] += 1
        return out

    def settings(self) -> dict:
        return {**super().settings(), "device": "CPU", **{k.lower(): v for k, v in self.config.items()},
                "executed_precision_per_batch": {str(k): v for k, v in self.executed.items()}}
