"""ONNX Runtime (CPU execution provider): full graph optimisation, optimised model cached.

int8 (CPU): the exported graph is first quantized to QDQ with onnxruntime.quantization
(zoo.quant.ort, calibrated on the run's calibration set), then optimised like fp32: the CPU EP
fuses DequantizeLinear -> op -> QuantizeLinear into integer kernels (QLinearConv, ...). What the
saved graph holds is counted, and an int8 run whose graph holds no integer operator is an error,
never a silent fp32 run."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.cache import ensure_entry, sealed_folder
from zoo.envinfo import cpu_isa, cpu_name
from zoo.errors import ZooError, one_line
from zoo.profile import ONNXRUNTIME_TO_ONNX
from zoo.runtimes.base import Compiled, ModelArtifacts, Runtime

if TYPE_CHECKING:
    import numpy as np


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    providers = ["CPUExecutionProvider"]
    precisions = ("fp32", "int8")
    quantization: dict | None = None  # int8: zoo.quant.ort's info and the optimised graph's op counts
    package = "onnxruntime"
    peak_precisions = ("fp32", "int8")  # a MatMul / Conv graph, and its QDQ form (integer kernels)
    peak_rank = 1
    diagnosed = True  # its int8 is the QDQ graph diagnose compares

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
        """Optimise the graph once (ORT_ENABLE_ALL) and save it; the entry is keyed by the ONNX
        hash, the ORT version, the providers and the CPU, its name and its ISA flags (the optimised
        graph may contain CPU-specific kernels, and one CPU name covers machines with and without
        AVX-512/AMX), so an unchanged rerun loads it without re-optimising. The entry
        `compiled/onnxruntime/<key>/` is a zoo.cache entry: concurrent runs build it once, and a
        damaged (e.g. truncated) one is rebuilt with a warning instead of being trusted."""
        import onnxruntime as ort
        if artifacts.onnx_path is None:
            raise ZooError("onnxruntime: no ONNX model to compile")
        source = Path(artifacts.onnx_path)
        if self.needs_calibration(self.precision):
            graph, self.quantization = self.quantize(artifacts, cache)
            source = Path(graph)
        onnx_hash = hashlib.sha256(source.read_bytes()).hexdigest()
        key = hashlib.sha256("|".join([onnx_hash, ort.__version__, ",".join(self.providers),
                                       cpu_name(), ",".join(cpu_isa()), "ORT_ENABLE_ALL"]).encode()).hexdigest()[:20]
        entry = cache / "compiled" / "onnxruntime" / key
        out = entry / "model.ort.onnx"
        self.inputs, self.outputs = artifacts.input_names, artifacts.output_names
        seconds = 0.0

        def build(tmp: Path) -> None:
            nonlocal seconds
            so = self._options(optimize=True)
            so.optimized_model_filepath = str(tmp / out.name)
            so.log_severity_level = 3  # the "hardware specific optimizations" notice: the key includes the CPU
            t0 = time.perf_counter()
            try:
                ort.InferenceSession(str(source), so, providers=self.providers)
            except Exception as exc:
                raise ZooError(f"{source}: ONNX Runtime cannot load the model ({one_line(exc)[:300]})") from None
            if not (tmp / out.name).is_file():
                raise ZooError(f"{source}: ONNX Runtime did not save the optimised model")
            seconds = time.perf_counter() - t0

        cached = ensure_entry(entry, build)
        extra = {"optimization": "ORT_ENABLE_ALL (saved)"}
        if self.quantization is not None:
            from zoo.quant.ort import quantized_op_counts
            self.quantization["optimised_graph_ops"] = quantized_op_counts(out)
            if not self.quantization["optimised_graph_ops"]["integer_compute"]:
                raise ZooError(f"{out}: the optimised int8 graph holds no integer operator "
                               f"({self.quantization['optimised_graph_ops']}): it would run in fp32")
            extra["quantization"] = self.quantization
        self.compiled = Compiled(out, cached, seconds, extra)
        return self.compiled

    def quantize(self, artifacts: ModelArtifacts, cache: Path) -> tuple[Path | None, dict]:
        """int8: the QDQ model of the exported graph (zoo.quant.ort, cached) and its info for the record."""
        if not self.needs_calibration(self.precision):
            return super().quantize(artifacts, cache)
        from zoo.quant.ort import quantize_qdq
        if artifacts.calibration is None:
            raise ZooError(f"{self.name}: int8 needs calibration samples (none were given to compile)")
        path, info, cached = quantize_qdq(Path(artifacts.onnx_path), artifacts.calibration, cache,
                                          keep_fp32=artifacts.keep_fp32)
        return path, {**info, "cached": cached}

    def executed_precision(self) -> str:
        """int8 only when the optimised graph holds integer operators (counted at compile)."""
        if self.precision != "int8":
            return self.precision
        ops = (self.quantization or {}).get("optimised_graph_ops") or {}
        if not ops.get("integer_compute"):
            raise ZooError(f"{self.name}: int8 was asked but the compiled graph holds no integer operator")
        return "int8"

    def load(self) -> None:
        # The saved graph is already optimised: loading it with optimisation off avoids redoing it.
        self.session = self._session(self._options(optimize=False))
        names = [i.name for i in self.session.get_inputs()]
        if names != list(self.inputs):
            raise ZooError(f"{self.compiled.path}: model inputs {names} differ from the expected {list(self.inputs)}")

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.outputs, feeds)
        return dict(zip(self.outputs, outs))

    def close(self) -> None:
        self.session = None

    profile_op_names = ONNXRUNTIME_TO_ONNX

    def _session(self, so):
        """A session of the compiled artifact (the saved graph is already optimised)."""
        import onnxruntime as ort
        return ort.InferenceSession(str(self.compiled.path), so, providers=self.providers)

    def _profiling_session(self, prefix: str):
        so = self._options(optimize=False)
        so.enable_profiling = True
        so.profile_file_prefix = prefix
        return self._session(so)

    def op_times(self, feeds, warmup, calls):
        """ONNX Runtime's profiler on a second session of the compiled graph: kernel times of the
        last `calls` runs (`model_run` events delimit the runs), summed per operator type."""
        import json
        import tempfile
        with tempfile.TemporaryDirectory(prefix="zoo-ortprof-") as tmp:
            session = self._profiling_session(str(Path(tmp) / "ort"))
            for _ in range(warmup + calls):
                session.run(self.outputs, feeds)
            events = json.loads(Path(session.end_profiling()).read_text())
        runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[-calls:]
        if len(runs) < calls:
            raise ZooError(f"{self.compiled.path}: ONNX Runtime's profile holds {len(runs)} runs, expected {calls}")
        start = runs[0][0]
        out: dict[str, list[float]] = {}
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start:
                op = e.get("args", {}).get("op_name", "?")
                acc = out.setdefault(op, [0.0, 0])
                acc[0] += e["dur"] / 1e3
                acc[1] += 1
        return out

    def settings(self) -> dict:
        return {**super().settings(), "providers": self.providers, "inter_op_num_threads": 1,
                "execution_mode": "ORT_SEQUENTIAL"}

    @classmethod
    def peak_seconds(cls, kernel, precision: str, threads: int, repeats: int, budget_s: float) -> tuple[float, str]:
        """The kernel's (QDQ for int8) one-operator graph on the CPU provider, fully optimised,
        input and output bound once (no copies in the timed call); the kernel is read from the
        optimised graph's operators."""
        import tempfile

        import numpy as np
        import onnx
        import onnxruntime as ort

        from zoo.cost import best_seconds
        from zoo.peak_kernels import kernel_inputs, kernel_onnx, kernel_shapes
        with tempfile.TemporaryDirectory(prefix="zoo-peak-") as tmp:
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.log_severity_level = 3  # not the warning that the saved graph is CPU-specific: it is read once, here
            so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            session = ort.InferenceSession(kernel_onnx(kernel, precision == "int8"), so,
                                           providers=["CPUExecutionProvider"])
            ops = [node.op_type for node in onnx.load(so.optimized_model_filepath).graph.node]
        main = [op for op in ops if kernel.op in op]
        integer = [op for op in main if "Integer" in op or "QLinear" in op]
        if not main or (precision == "int8" and not integer):
            raise ZooError(f"onnxruntime {ort.__version__}: the {precision} {kernel.op} graph did not run "
                           f"{'an integer' if precision == 'int8' else 'a'} {kernel.op} kernel "
                           f"(optimised graph: {', '.join(ops)})")
        binding = session.io_binding()
        binding.bind_ortvalue_input("X", ort.OrtValue.ortvalue_from_numpy(kernel_inputs(kernel)[0]))
        output = np.empty(kernel_shapes(kernel)[2], np.float32)
        binding.bind_ortvalue_output("Y", ort.OrtValue.ortvalue_from_numpy(output))
        seconds = best_seconds(lambda: session.run_with_iobinding(binding), repeats, budget_s)
        return seconds, f"onnxruntime {ort.__version__} {(integer or main)[0]} ({' -> '.join(ops)})"


class _OnnxRuntimeGpu(OnnxRuntime):
    """ONNX Runtime with a GPU execution provider. Inputs go through IO binding so that the
    host-to-device copy, the compute and the device-to-host copy are timed separately
    (`last_timing`, collected by the harness). The optimised graph is not saved (it would hold
    provider-specific nodes); the session optimises at load."""

    device_type = "cuda"
    accelerator = "GPU"
    ort_device = "cuda"
    required_provider = ""
    precisions = ("fp32",)  # not the CPU class's: each GPU runtime lists its own
    peak_precisions = ()    # the CPU peak is not this runtime's: its kernels run on the GPU
    diagnosed = False       # diagnose's QDQ graphs are not what a GPU provider runs

    def __init__(self, threads: int | None = None, precision: str = "fp32"):
        super().__init__(threads, precision)
        import os
        self.device_id = int(os.environ.get("ZOO_CUDA_DEVICE", "0"))
        self.last_timing: dict | None = None

    @classmethod
    def unavailable_reason(cls):
        reason = super().unavailable_reason()
        if reason:
            return reason
        import onnxruntime as ort
        if cls.required_provider not in ort.get_available_providers():
            return (f"onnxruntime {ort.__version__} has no {cls.required_provider} here (needs the onnxruntime-gpu "
                    f"package, a matching CUDA/cuDNN{'/TensorRT' if 'Tensorrt' in cls.required_provider else ''} "
                    f"and an NVIDIA driver); available: {', '.join(ort.get_available_providers())}")
        return None

    def provider_options(self, cache: Path, graph_sha: str = "", table: Path | None = None) -> list[dict]:
        """The providers' options for this precision; graph_sha (the exported graph's sha256) and
        table (a TensorRT int8 calibration table) key what the provider caches."""
        raise NotImplementedError

    def executed_precision(self) -> str:
        # What the GPU executes is decided on the device (TensorRT picks each layer's kernels):
        # only a runtime that can read it back from its graph overrides this.
        return self.precision

    def compile(self, artifacts: ModelArtifacts, cache: Path) -> Compiled:
        """Prepare the graph (the quantize hook), then the provider options; the session is built at load."""
        from zoo.fileutil import file_digest
        if artifacts.onnx_path is None:
            raise ZooError(f"{self.name}: no ONNX model to compile")
        self.inputs, self.outputs = artifacts.input_names, artifacts.output_names
        t0 = time.perf_counter()
        graph, extra = self.quantize(artifacts, Path(cache))
        graph = Path(graph)
        table = Path(extra["calibration_table"]) if "calibration_table" in extra else None
        self.options = self.provider_options(Path(cache), file_digest(Path(artifacts.onnx_path)), table)
        self.compiled = Compiled(graph, False, time.perf_counter() - t0,
                                 {"optimization": "ORT_ENABLE_ALL (at load)", "provider_options": self.options, **extra})
        return self.compiled

    def load(self) -> None:
        t0 = time.perf_counter()
        try:
            self.session = self._session(self._options(optimize=True))
        except Exception as exc:
            raise ZooError(f"{self.compiled.path}: {self.name} cannot load the model ({one_line(exc)[:300]})") from None
        self.compiled.seconds += time.perf_counter() - t0  # + the preparation in compile()

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.infer_bound(feeds, self.ort_device, self.device_id)

    def _session(self, so):
        """A session of the raw graph, optimised at load, with the provider options."""
        import onnxruntime as ort
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(str(self.compiled.path), so, providers=self.providers,
                                    provider_options=self.options)

    def infer_bound(self, feeds: dict[str, np.ndarray], device: str, device_id: int) -> dict[str, np.ndarray]:
        import numpy as np
        import onnxruntime as ort
        binding = self.session.io_binding()
        t0 = time.perf_counter_ns()
        values = {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), device, device_id) for k, v in feeds.items()}
        t1 = time.perf_counter_ns()
        for k, v in values.items():
            binding.bind_ortvalue_input(k, v)
        for name in self.outputs:
            binding.bind_output(name, device, device_id)
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        t2 = time.perf_counter_ns()
        outs = binding.copy_outputs_to_cpu()
        t3 = time.perf_counter_ns()
        self.last_timing = {"h2d_ms": (t1 - t0) / 1e6, "compute_ms": (t2 - t1) / 1e6, "d2h_ms": (t3 - t2) / 1e6}
        return dict(zip(self.outputs, outs))

    def settings(self) -> dict:
        return {**super().settings(), "device_id": self.device_id, "io_binding": True}

    def device_info(self) -> dict | None:
        import subprocess
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader",
                                  "-i", str(self.device_id)], capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        name, driver, mem = ([p.strip() for p in out.split(",")] + ["unknown"] * 3)[:3] if out else ["unknown"] * 3
        return {"type": "cuda", "name": name, "count": 1,
                "details": {"device_id": self.device_id, "driver": driver, "memory": mem}}


class OnnxRuntimeCuda(_OnnxRuntimeGpu):
    """fp16 runs a float16 copy of the graph (zoo.quant.fp16: float32 inputs and outputs kept),
    converted once on the host; the CUDA provider runs the graph's types."""
    name = "onnxruntime-cuda"
    required_provider = "CUDAExecutionProvider"
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    precisions = ("fp32", "fp16")
    converted_precisions = ("fp16",)  # zoo.quant.fp16: the graph's float16 copy (--keep-fp32 applies)

    def provider_options(self, cache: Path, graph_sha: str = "", table: Path | None = None) -> list[dict]:
        return [{"device_id": str(self.device_id), "cudnn_conv_algo_search": "EXHAUSTIVE",
                 "do_copy_in_default_stream": "1"}, {}]

    def quantize(self, artifacts: ModelArtifacts, cache: Path) -> tuple[Path | None, dict]:
        """fp16: the graph's float16 copy (zoo.quant.fp16, cached)."""
        if self.precision not in self.converted_precisions:
            return super().quantize(artifacts, cache)
        from zoo.quant.fp16 import fp16_graph
        graph = fp16_graph(Path(artifacts.onnx_path), cache, artifacts.keep_fp32)
        return graph, {"graph_conversion": "float16 (onnxruntime.transformers.float16, float32 I/O kept)",
                       "keep_fp32": list(artifacts.keep_fp32)}

    def executed_precision(self) -> str:
        """Read back from the graph the session runs: fp16 when it holds float16 initializers."""
        if self.compiled is None:
            return self.precision
        import onnx
        graph = onnx.load(str(self.compiled.path), load_external_data=False).graph
        return "fp16" if any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer) else "fp32"


def trt_engine_dir(cache: Path, graph_sha: str, precision: str, table: Path | None = None) -> Path:
    """TensorRT's engine cache folder for this graph and precision (and int8 calibration table):
    the EP names its engines after the model's file name and its nodes, not its weights nor
    (in older releases) its precision, so an engine built for one of these must never be found
    by another."""
    name = f"{precision}-{graph_sha[:16] or 'graph'}" + (f"-{Path(table).parent.name}" if table else "")
    return Path(cache).resolve() / "compiled" / "tensorrt" / name


class OnnxRuntimeTensorRT(_OnnxRuntimeGpu):
    """fp16: TensorRT may pick fp16 kernels (trt_fp16_enable). int8: TensorRT may pick int8
    kernels (trt_int8_enable) with the activation ranges of a calibration table made from the
    run's calibration samples (zoo.quant.trt_table, ORT's table format rather than TensorRT's
    native one); layers without an int8 kernel stay fp32. The EP writes and reads its engines in
    trt_engine_dir itself: that folder is a zoo.cache sealed folder, checked under its lock before
    the EP can read it (session creation, first run of each shape) and sealed after."""
    name = "onnxruntime-trt"
    required_provider = "TensorrtExecutionProvider"
    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    precisions = ("fp32", "fp16", "int8")
    engines: Path | None = None  # the engine folder (provider_options), a zoo.cache sealed folder

    def __init__(self, threads: int | None = None, precision: str = "fp32"):
        super().__init__(threads, precision)
        self.sealed_shapes: set[tuple] = set()  # input shapes whose first run was under the seal

    def _session(self, so):
        """The EP reads (and may write) its engines while the session is created: checked against
        their seal before (damaged -> removed, rebuilt), sealed after."""
        with sealed_folder(self.engines):
            return super()._session(so)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The first run of each input shape may load or build an engine for it (a dynamic batch
        dimension is resolved at run time): that run too is under the engine folder's seal."""
        shapes = tuple(tuple(v.shape) for v in feeds.values())
        if shapes in self.sealed_shapes:
            return super().infer(feeds)
        with sealed_folder(self.engines):
            out = super().infer(feeds)
        self.sealed_shapes.add(shapes)
        return out

    def quantize(self, artifacts: ModelArtifacts, cache: Path) -> tuple[Path | None, dict]:
        """int8: the exported graph with a calibration table of its activation ranges
        (zoo.quant.trt_table, cached); TensorRT quantizes it when it builds the engine."""
        if artifacts.keep_fp32 and self.precision != "fp32":
            raise ZooError(f"{self.name}: --keep-fp32 is not supported (TensorRT chooses each layer's precision)")
        if not self.needs_calibration(self.precision):
            return super().quantize(artifacts, cache)
        if artifacts.calibration is None:
            raise ZooError(f"{self.name}: int8 needs the run's calibration samples")
        from zoo.quant.trt_table import calibration_table
        table = calibration_table(Path(artifacts.onnx_path), artifacts.calibration, cache)
        return Path(artifacts.onnx_path), {"calibration_table": str(table)}

    def provider_options(self, cache: Path, graph_sha: str = "", table: Path | None = None) -> list[dict]:
        import os
        engines = trt_engine_dir(cache, graph_sha, self.precision, table)
        engines.mkdir(parents=True, exist_ok=True)
        self.engines = engines
        trt = {"device_id": str(self.device_id), "trt_fp16_enable": str(self.precision == "fp16"),
               "trt_int8_enable": str(self.precision == "int8"), "trt_engine_cache_enable": "True",
               "trt_engine_cache_path": str(engines), "trt_max_workspace_size": str(2 << 30)}
        if self.precision == "int8":
            if table is None:
                raise ZooError(f"{self.name}: int8 needs a calibration table")
            # The EP opens trt_engine_cache_path joined with this name: a path relative to the
            # engine folder reaches the table's cache entry whatever the join does with absolute names.
            trt.update(trt_int8_use_native_calibration_table="False",
                       trt_int8_calibration_table_name=os.path.relpath(Path(table).resolve(), engines))
        return [trt, {"device_id": str(self.device_id)}, {}]
