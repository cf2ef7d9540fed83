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
  fp32 speed as bf16 (or a bf16 one as fp32). Each compiled model's runtime graph is read too:
  the precision each convolution/matmul kernel runs in (its `runtimePrecision`) is counted per
  batch size and recorded, and an fp32 or int8 run with a layer in bf16/f16 is refused as well;
- int8 (--precision int8): the ONNX model quantized with NNCF on the run's calibration samples
  (zoo.quant.ov, cached), compiled with INFERENCE_PRECISION_HINT f32 so that the layers left
  unquantized run fp32 (never silently bf16 on an AMX CPU). The int8 convolutions are the CPU
  plugin's fusion of FakeQuantize and convolution (u8 activations x i8 weights); a compiled model
  with no convolution running in u8/i8 is an error, never an fp32 speed recorded as int8.
Override with ZOO_OPENVINO_HINT (LATENCY/THROUGHPUT), ZOO_OPENVINO_STREAMS.

Each compiled model is a zoo.cache entry `compiled/openvino/<key>/model.blob` (compile_model, then
export_model), keyed by the model file compiled, the static shape, the full config, OpenVINO's
build and the CPU's name and ISA flags; a run imports the blob's verified bytes with the same
config. OpenVINO's own CACHE_DIR is not used: it loads its blobs unchecked, and a blob with 4 KiB
flipped ran silently (IoU 0.25 instead of 0.73). The CPU plugin picks its kernels again at import
(the precision hint decides them), so the precision read-back above is done on the imported model,
as on a fresh compile. compile_cached is True only when every batch size's blob was reused."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.cache import ensure_entry, read_entry_file
from zoo.envinfo import cpu_flags_summary, cpu_isa, cpu_name
from zoo.errors import ZooError, one_line
from zoo.profile import OPENVINO_TO_ONNX
from zoo.runtimes.base import Compiled, ModelArtifacts, Runtime

if TYPE_CHECKING:
    import numpy as np


# --precision -> the CPU plugin's element type, and back
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
# INFERENCE_PRECISION_HINT per --precision: int8 is in the model (FakeQuantize), the rest fp32
HINT = {**OV_PRECISION, "int8": "f32"}
EXECUTED = {**{v: k for k, v in OV_PRECISION.items()}, "i8": "int8"}
# The runtime graph's layer types that do the arithmetic, whose kernels' precision is counted
COMPUTE_LAYERS = ("Convolution", "Deconvolution", "FullyConnected", "MatMul")
# A peak kernel's operator -> the layer types the CPU plugin runs it as (a MatMul with a constant
# operand runs as FullyConnected)
PEAK_LAYERS = {"MatMul": ("MatMul", "FullyConnected", "Gemm"), "Conv": ("Convolution",)}
INT8_TYPES = ("u8", "i8")
# A compiled model's cache entry: the blob export_model wrote, and the key it was built for (to read)
BLOB, KEY = "model.blob", "key.json"
BLOB_FORMAT = 1  # bump when what is exported, or how, changes


def first_layer(compiled, kinds) -> dict:
    """{'type', 'precision', 'primitive'} of the compiled model's first layer of one of `kinds`:
    its layer type, runtime precision and primitive (e.g. brgemm_avx512_bf16), from the runtime
    model's rt_info; {} when there is none."""
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" not in info:
            continue
        kind = info["layerType"].astype(str)
        if kind in kinds:
            return {"type": kind, **{key: info[name].astype(str) if name in info else None for key, name in
                                     (("precision", "runtimePrecision"), ("primitive", "primitiveType"))}}
    return {}


def executed_layers(compiled) -> dict[str, dict[str, int]]:
    """{layer type: {runtime precision: count}} of the compute layers of a compiled model, read
    from its runtime graph (each operation's rt_info `layerType` and `runtimePrecision`)."""
    counts: dict[str, dict[str, int]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        kind = rt["layerType"].astype(str) if "layerType" in rt.keys() else ""
        if kind in COMPUTE_LAYERS:
            prec = rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt.keys() else "?"
            counts.setdefault(kind, {})
            counts[kind][prec] = counts[kind].get(prec, 0) + 1
    return counts


class OpenVinoRuntime(Runtime):
    name = "openvino"
    precisions = (*OV_PRECISION, "int8")
    quantization: dict | None = None  # int8: zoo.quant.ov's info
    package = "openvino"
    peak_precisions = precisions  # the precision hint (f32, bf16, f16) and FakeQuantize (int8)
    peak_rank = 2
    diagnosed = True
    diagnose_note = ("per-layer comparison and sensitivity run on ONNX Runtime's graphs of the same exported "
                     "model; --auto uses NNCF's accuracy control")

    def __init__(self, threads: int | None = None, precision: str = "fp32"):
        super().__init__(threads, precision)
        self.config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": os.environ.get("ZOO_OPENVINO_HINT", "LATENCY"),
            "NUM_STREAMS": int(os.environ.get("ZOO_OPENVINO_STREAMS", "1")),
            "INFERENCE_PRECISION_HINT": HINT[self.precision],
        }
        self.executed: dict[int, str] = {}  # batch size -> the element type its compiled model runs
        self.layers: dict[int, dict] = {}   # batch size -> executed_layers() of its compiled model
        self.requests: dict[int, object] = {}
        self.compile_seconds: dict[int, float] = {}
        self.cached: dict[int, bool] = {}   # batch size -> its compiled model came from the cache
        self.entries: dict[int, str] = {}   # batch size -> its cache entry

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
        """Read the model (int8: quantize it); the per-batch compiled models are cache entries
        `compiled/openvino/<key>/model.blob` built on first use (_request). OpenVINO's own
        CACHE_DIR is not used: its blobs are loaded unchecked."""
        import openvino as ov
        from zoo.fileutil import file_digest
        if artifacts.onnx_path is None:
            raise ZooError("openvino: no ONNX model to compile")
        self.core = ov.Core()
        self.cache_dir = Path(cache) / "compiled" / "openvino"
        try:
            self.model = self.core.read_model(str(artifacts.onnx_path))
        except Exception as exc:
            raise ZooError(f"{artifacts.onnx_path}: OpenVINO cannot read the model ({one_line(exc)[:300]})") from None
        self.inputs, self.outputs = artifacts.input_names, artifacts.output_names
        extra = {"config": self.config, "compile_seconds_per_batch": self.compile_seconds,
                 "compile_cached_per_batch": self.cached, "entry_per_batch": self.entries}
        self.model_digest = file_digest(Path(artifacts.onnx_path))
        if self.needs_calibration(self.precision):
            path, self.quantization = self.quantize(artifacts, cache)
            self.model = self.core.read_model(str(path))
            # the IR compiled is NNCF's (its .xml and .bin, checked by zoo.cache just now)
            self.model_digest = "+".join(file_digest(Path(path).with_suffix(ext)) for ext in (".xml", ".bin"))
            extra["quantization"] = self.quantization
        self.compiled = Compiled(self.cache_dir, False, 0.0, extra)
        return self.compiled

    def entry_key(self, shape: tuple[int, ...]) -> dict:
        """Everything that decides a compiled blob: the model file compiled (the ONNX, or the int8
        IR), the static shape, the full compile config, OpenVINO's build and the CPU (its name and
        its ISA: machines of one name differ in AVX-512/AMX, and the plugin picks kernels by ISA)."""
        import openvino as ov
        return {"model": self.model_digest, "input": self.inputs[0], "shape": [int(d) for d in shape],
                "config": {k: str(v) for k, v in self.config.items()}, "openvino": ov.__version__,
                "cpu": cpu_name(), "isa": cpu_isa(), "format": BLOB_FORMAT}

    def quantize(self, artifacts: ModelArtifacts, cache: Path) -> tuple[Path | None, dict]:
        """int8: the NNCF int8 IR of the ONNX model read by compile (zoo.quant.ov, cached; the
        path of its .xml) and its info for the record."""
        if not self.needs_calibration(self.precision):
            return super().quantize(artifacts, cache)
        from zoo.quant.ov import quantize_ov
        if artifacts.calibration is None:
            raise ZooError(f"{self.name}: int8 needs calibration samples (none were given to compile)")
        path, info, cached = quantize_ov(self.core, self.model, artifacts.calibration, cache,
                                         self.model_digest, artifacts.keep_fp32)
        return path, {**info, "cached": cached}

    def load(self) -> None:
        pass  # one compiled model per batch size, on first use

    def _request(self, shape: tuple[int, ...]):
        bs = int(shape[0])
        if bs not in self.requests:
            t0 = time.perf_counter()
            compiled = self._cached_compile(shape)
            self.compile_seconds[bs] = round(time.perf_counter() - t0, 3)
            self.executed[bs] = self._check_precision(compiled, shape)
            self.layers[bs] = executed_layers(compiled)
            if self._check_layers(self.layers[bs], shape):
                self.executed[bs] = "i8"
            self.compiled.seconds += self.compile_seconds[bs]
            self.compiled.cached = all(self.cached.values())
            self.requests[bs] = (compiled, compiled.create_infer_request())
        return self.requests[bs]

    def _cached_compile(self, shape: tuple[int, ...]):
        """The compiled model of this static shape, imported from its zoo.cache entry (built by
        compile_model + export_model when missing or damaged). The bytes imported are the ones
        the entry's sidecar vouches for; the import gets the same config, and the precision it
        executes is read back from the imported model as from a fresh compile."""
        import hashlib
        import json
        key = self.entry_key(shape)
        entry = self.cache_dir / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]

        def build(tmp: Path) -> None:
            compiled = self._compile(shape, self.config)
            (tmp / BLOB).write_bytes(compiled.export_model().getbuffer())  # export_model returns a BytesIO
            (tmp / KEY).write_text(json.dumps(key, indent=1))

        bs = int(shape[0])
        self.cached[bs] = ensure_entry(entry, build)
        self.entries[bs] = str(entry)
        blob = read_entry_file(entry, BLOB)
        try:
            return self.core.import_model(blob, "CPU", self.config)
        except Exception as exc:
            raise ZooError(f"{entry / BLOB}: OpenVINO cannot import the compiled model ({one_line(exc)[:300]}); "
                           f"remove the folder to rebuild it") from None

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
        want = HINT[self.precision]
        if got != want:
            raise ZooError(f"openvino: asked for {self.precision} ({want}) but the CPU plugin compiled the "
                           f"{list(shape)} model to run {got} (this CPU: {cpu_flags_summary()}); no result written")
        return got

    def _check_layers(self, layers: dict[str, dict[str, int]], shape) -> bool:
        """The compute layers' kernels agree with the precision asked for: no bf16/f16 kernel in an
        fp32 or int8 run, and in an int8 run at least one convolution (or matmul) in u8/i8.
        True when the model runs int8."""
        where = f"the CPU plugin compiled the {list(shape)} model"
        if self.precision in ("fp32", "int8"):
            lower = {k: n for k, by in layers.items() for p, n in by.items() if p in ("bf16", "f16")}
            if lower:
                raise ZooError(f"openvino: asked for {self.precision} but {where} with layers in bf16/f16 ({lower}; "
                               f"this CPU: {cpu_flags_summary()}); no result written")
        if self.precision != "int8":
            return False
        if not any(p in INT8_TYPES for by in layers.values() for p in by):
            raise ZooError(f"openvino: asked for int8 but {where} with no convolution or matmul in int8 "
                           f"(kernels: {layers or 'none'}; this CPU: {cpu_flags_summary()}); no result written")
        return True

    def executed_precision(self) -> str:
        kinds = {EXECUTED.get(v, v) for v in self.executed.values()}
        if self.precision == "int8" and kinds != {"int8"}:
            raise ZooError("openvino: int8 was asked but no compiled model was read back as running int8")
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
                "executed_precision_per_batch": {str(k): v for k, v in self.executed.items()},
                "executed_layers_per_batch": {str(k): v for k, v in self.layers.items()}}

    @classmethod
    def peak_seconds(cls, kernel, precision: str, threads: int, repeats: int, budget_s: float) -> tuple[float, str]:
        """The CPU plugin on the kernel's (QDQ for int8) one-operator graph with the precision hint,
        one request, the input set once; the kernel is the layer's runtime precision in the
        compiled model, which must be the one asked for."""
        import tempfile

        import openvino as ov

        from zoo.cost import best_seconds
        from zoo.peak_kernels import kernel_inputs, kernel_onnx
        version = ov.__version__.split("-")[0]
        core = ov.Core()
        with tempfile.TemporaryDirectory(prefix="zoo-peak-") as tmp:  # read_model takes a path
            path = Path(tmp) / "kernel.onnx"
            path.write_bytes(kernel_onnx(kernel, precision == "int8"))
            model = core.read_model(str(path))
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                  "INFERENCE_PRECISION_HINT": HINT[precision]}
        compiled = core.compile_model(model, "CPU", config)
        ran = first_layer(compiled, PEAK_LAYERS[kernel.op])
        want = {"int8": INT8_TYPES, "fp32": ("f32",)}.get(precision, (HINT[precision],))
        if ran.get("precision") not in want:
            raise ZooError(f"openvino {version}: the {precision} {kernel.op} ran as {ran.get('type', 'no such layer')} "
                           f"{ran.get('precision')} on this CPU, not {precision}")
        request = compiled.create_infer_request()
        request.set_input_tensor(ov.Tensor(kernel_inputs(kernel)[0]))
        seconds = best_seconds(request.infer, repeats, budget_s)
        return seconds, f"openvino {version} CPU {ran['type']} {ran['precision']} ({ran['primitive']})"

    @classmethod
    def diagnose_auto(cls, export: dict, calibration, judge, x: np.ndarray, input_name: str, by: str,
                      tolerance: float) -> dict | None:
        """NNCF's accuracy-controlled quantization (zoo.quant.ov) of the exported model with the
        manifest's tolerance as its relative max drop, validated on the N samples by the same
        criterion as diagnose's ONNX Runtime loop (judge.score); the operations NNCF reverted to
        floating point, and the ONNX node names they came from (the --keep-fp32 list)."""
        import numpy as np
        import openvino as ov

        from zoo.quant import ov as qov
        core = ov.Core()
        model = core.read_model(str(export["path"]))
        items = [({input_name: x[i:i + 1]}, i) for i in range(len(x))]

        def validate(compiled, subset) -> float:
            outs = np.concatenate([compiled(feeds)[compiled.output(0)] for feeds, _ in subset])
            return judge.score(outs, [i for _, i in subset], by)

        _, reverted, info = qov.quantize_ov_with_accuracy_control(core, model, calibration, items, validate,
                                                                  max_drop=tolerance)
        keep = list(dict.fromkeys(n.split("/WithoutBiases")[0] for n in reverted))
        return {"tool": "nncf.quantize_with_accuracy_control", "max_drop": tolerance, "by": by, "reverted": reverted,
                "keep": keep, "info": info}
