"""ONNX Runtime (CPU execution provider): full graph optimisation, optimised model cached."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from zoo.envinfo import cpu_name
from zoo.errors import ZooError, one_line
from zoo.runtimes.base import Compiled, ModelArtifacts, Runtime


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    providers = ["CPUExecutionProvider"]

    @classmethod
    def unavailable_reason(cls):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "the onnxruntime package is not installed in this environment"
        return None

    @classmethod
    def version(cls) -> str:
        import onnxruntime
        return onnxruntime.__version__

    def _options(self, optimize: bool):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                       else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        return so

    def compile(self, artifacts: ModelArtifacts, cache: Path) -> Compiled:
        """Optimise the graph once (ORT_ENABLE_ALL) and save it; the file is keyed by the ONNX
        hash, the ORT version, the providers and the CPU (the optimised graph may contain
        CPU-specific kernels), so an unchanged rerun loads it without re-optimising."""
        import onnxruntime as ort
        if artifacts.onnx_path is None:
            raise ZooError("onnxruntime: no ONNX model to compile")
        onnx_hash = hashlib.sha256(Path(artifacts.onnx_path).read_bytes()).hexdigest()
        key = hashlib.sha256("|".join([onnx_hash, ort.__version__, ",".join(self.providers),
                                       cpu_name(), "ORT_ENABLE_ALL"]).encode()).hexdigest()[:20]
        out = cache / "compiled" / "onnxruntime" / key / "model.ort.onnx"
        self.inputs, self.outputs = artifacts.input_names, artifacts.output_names
        if out.is_file():
            self.compiled = Compiled(out, True, 0.0, {"optimization": "ORT_ENABLE_ALL (saved)"})
            return self.compiled
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        so = self._options(optimize=True)
        so.optimized_model_filepath = str(tmp)
        so.log_severity_level = 3  # the "hardware specific optimizations" notice: the key includes the CPU
        t0 = time.perf_counter()
        try:
            ort.InferenceSession(str(artifacts.onnx_path), so, providers=self.providers)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise ZooError(f"{artifacts.onnx_path}: ONNX Runtime cannot load the model ({one_line(exc)[:300]})") from None
        tmp.replace(out)
        self.compiled = Compiled(out, False, time.perf_counter() - t0, {"optimization": "ORT_ENABLE_ALL (saved)"})
        return self.compiled

    def load(self) -> None:
        import onnxruntime as ort
        # The saved graph is already optimised: loading it with optimisation off avoids redoing it.
        self.session = ort.InferenceSession(str(self.compiled.path), self._options(optimize=False),
                                            providers=self.providers)
        names = [i.name for i in self.session.get_inputs()]
        if names != list(self.inputs):
            raise ZooError(f"{self.compiled.path}: model inputs {names} differ from the expected {list(self.inputs)}")

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.outputs, feeds)
        return dict(zip(self.outputs, outs))

    def close(self) -> None:
        self.session = None

    def settings(self) -> dict:
        return {**super().settings(), "providers": self.providers, "inter_op_num_threads": 1,
                "execution_mode": "ORT_SEQUENTIAL"}
