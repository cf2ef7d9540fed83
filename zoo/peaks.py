"""The GEMM peak of each precision, so a reduced-precision run is read against the limit of the
arithmetic it actually runs, not against fp32's (a bf16 model at 40% of the fp32 peak may be at
15% of what the bf16 units can do).

Every peak is measured the way zoo.cost.gemm_peak measures fp32: one large square matrix product
(n x n by n x n) on the run's threads, best of several calls, through the kernels of the runtime
that runs the model:

- fp32: the best of torch.mm (zoo.cost.gemm_peak) and, for a run on onnxruntime or openvino, the
  same MatMul graph through that runtime's own fp32 kernel (`fp32_peak`): PyTorch's BLAS may not
  use the widest units of every CPU (on an AMD EPYC with AVX-512, torch.mm reached 230 GFLOP/s on
  2 threads where OpenVINO's fp32 MatMul reached about 470, and ErfNet's ONNX Runtime run was
  recorded at 183% of the torch.mm "peak"), and a peak must bound what the run can reach;
- bf16: torch.mm on bfloat16 tensors (PyTorch's own bf16 kernel, what its CPU autocast runs) for
  the torch runtime; otherwise one MatMul ONNX graph compiled by OpenVINO with
  INFERENCE_PRECISION_HINT bf16;
- fp16: the same MatMul graph in OpenVINO with INFERENCE_PRECISION_HINT f16;
- int8: one QDQ-quantized MatMul ONNX graph (uint8 activations, int8 weights, per-tensor scales:
  what ONNX Runtime's static quantizer writes), run by ONNX Runtime (which fuses it into its
  integer MatMul kernel) for onnxruntime, by OpenVINO (which turns the QDQ pairs into
  FakeQuantize and the MatMul into an int8 one) for openvino.

`gflops` is always 2 x n^3 operations per second / 1e9: for int8 these are integer
multiply-accumulates counted as two operations (GOP/s), the same count zoo.cost gives a model's
FLOPs, so a run's gflops / this peak is its fraction of its own precision's peak. `kernel` names
what actually ran, read back from the runtime where it says (ONNX Runtime's optimised graph,
OpenVINO's runtime model precision of the MatMul): a runtime that silently fell back to fp32
makes the peak unavailable rather than wrong."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from zoo.cost import best_seconds
from zoo.errors import ZooError, one_line

# precision -> runtime -> the kernel family measuring its peak (None key: any other runtime)
KERNELS = {
    "bf16": {"torch": "torch", None: "openvino"},
    "fp16": {None: "openvino"},
    "int8": {"openvino": "openvino", None: "onnxruntime"},
}
OV_TYPES = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def _operands(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)


def matmul_onnx(n: int, quantized: bool) -> bytes:
    """A one-MatMul ONNX graph, A (input, n x n float) x B (initializer); `quantized`: A through
    QuantizeLinear/DequantizeLinear (uint8, per tensor) and B stored as int8 with a
    DequantizeLinear, the QDQ form of a statically quantized MatMul."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    a, b = _operands(n)
    inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])]
    output = [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])]
    if not quantized:
        nodes = [helper.make_node("MatMul", ["A", "B"], ["C"])]
        inits = [numpy_helper.from_array(b, "B")]
    else:
        a_scale = float(np.abs(a).max()) / 127.0
        b_scale = float(np.abs(b).max()) / 127.0
        b_q = np.clip(np.round(b / b_scale), -127, 127).astype(np.int8)
        inits = [numpy_helper.from_array(np.array(a_scale, np.float32), "a_scale"),
                 numpy_helper.from_array(np.array(128, np.uint8), "a_zero"),
                 numpy_helper.from_array(b_q, "B_q"),
                 numpy_helper.from_array(np.array(b_scale, np.float32), "b_scale"),
                 numpy_helper.from_array(np.array(0, np.int8), "b_zero")]
        nodes = [helper.make_node("QuantizeLinear", ["A", "a_scale", "a_zero"], ["A_q"]),
                 helper.make_node("DequantizeLinear", ["A_q", "a_scale", "a_zero"], ["A_dq"]),
                 helper.make_node("DequantizeLinear", ["B_q", "b_scale", "b_zero"], ["B_dq"]),
                 helper.make_node("MatMul", ["A_dq", "B_dq"], ["C"])]
    graph = helper.make_graph(nodes, "gemm_peak", inputs, output, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _torch(precision: str, threads: int, n: int, repeats: int) -> tuple[float, str]:
    import torch
    if precision not in ("fp32", "bf16"):
        raise ZooError(f"torch: no {precision} GEMM peak (the torch runtime runs fp32 and bf16)")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
        a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
        with torch.inference_mode():
            seconds = best_seconds(lambda: torch.mm(a, b), repeats)
    finally:
        torch.set_num_threads(old)
    return seconds, f"torch {torch.__version__} torch.mm {precision}"


def _onnxruntime(precision: str, threads: int, n: int, repeats: int) -> tuple[float, str]:
    """ONNX Runtime on the (QDQ) MatMul graph, fully optimised, inputs and output bound once
    (no copies in the timed call); the kernel is read from the optimised graph's operators."""
    import onnx
    import onnxruntime as ort
    if precision not in ("fp32", "int8"):
        raise ZooError(f"onnxruntime: no {precision} GEMM peak (it runs fp32 and int8)")
    with tempfile.TemporaryDirectory(prefix="zoo-peak-") as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3  # not the warning that the saved graph is CPU-specific: it is read once, here
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        session = ort.InferenceSession(matmul_onnx(n, precision == "int8"), so, providers=["CPUExecutionProvider"])
        ops = [node.op_type for node in onnx.load(so.optimized_model_filepath).graph.node]
    kernel = next((op for op in ops if "MatMul" in op), None)
    if kernel is None or (precision == "int8" and kernel == "MatMul"):
        raise ZooError(f"onnxruntime {ort.__version__}: the {precision} MatMul graph did not run an integer "
                       f"MatMul kernel (optimised graph: {', '.join(ops)})")
    a, _ = _operands(n)
    binding = session.io_binding()
    binding.bind_ortvalue_input("A", ort.OrtValue.ortvalue_from_numpy(a))
    binding.bind_ortvalue_output("C", ort.OrtValue.ortvalue_from_numpy(np.empty((n, n), np.float32)))
    seconds = best_seconds(lambda: session.run_with_iobinding(binding), repeats)
    return seconds, f"onnxruntime {ort.__version__} {kernel} ({' -> '.join(ops)})"


def _openvino(precision: str, threads: int, n: int, repeats: int) -> tuple[float, str]:
    """OpenVINO's CPU plugin on the (QDQ) MatMul graph with the precision hint (f32 for int8:
    the FakeQuantize nodes, not the hint, make it integer), one request, the input set once; the
    kernel is the MatMul's runtime precision in the compiled model, which must be the one asked for."""
    import openvino as ov
    core = ov.Core()
    model = _ov_model(core, n, precision == "int8")
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
              "INFERENCE_PRECISION_HINT": OV_TYPES.get(precision, "f32")}
    compiled = core.compile_model(model, "CPU", config)
    ran = _ov_matmul(compiled)
    want = {"int8": ("u8", "i8"), "fp32": ("f32",)}.get(precision, (OV_TYPES.get(precision),))
    if ran.get("precision") not in want:
        raise ZooError(f"openvino {ov.__version__.split('-')[0]}: the {precision} MatMul ran as {ran.get('type')} "
                       f"{ran.get('precision')} on this CPU, not {precision}")
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(_operands(n)[0]))
    seconds = best_seconds(request.infer, repeats)
    return seconds, f"openvino {ov.__version__.split('-')[0]} CPU {ran['type']} {ran['precision']} ({ran['primitive']})"


def _ov_model(core, n: int, quantized: bool):
    """The ONNX MatMul graph read by OpenVINO (through a file: read_model takes a path)."""
    with tempfile.TemporaryDirectory(prefix="zoo-peak-") as tmp:
        path = Path(tmp) / "matmul.onnx"
        path.write_bytes(matmul_onnx(n, quantized))
        return core.read_model(str(path))


def _ov_matmul(compiled) -> dict:
    """{'type', 'precision', 'primitive'} of the compiled model's MatMul (OpenVINO's CPU plugin
    runs a MatMul with a constant operand as FullyConnected): its layer type, runtime precision
    and primitive (e.g. brgemm_avx512_bf16), from the runtime model's rt_info."""
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" not in info:
            continue
        kind = info["layerType"].astype(str)
        if kind in ("MatMul", "FullyConnected", "Gemm"):
            return {"type": kind, **{key: info[name].astype(str) if name in info else None for key, name in
                                     (("precision", "runtimePrecision"), ("primitive", "primitiveType"))}}
    return {}


MEASURE = {"torch": _torch, "onnxruntime": _onnxruntime, "openvino": _openvino}


def kernel_family(precision: str, runtime: str | None) -> str:
    """Which runtime's kernel measures `precision`'s peak for a run on `runtime`."""
    table = KERNELS.get(precision)
    if table is None:
        raise ZooError(f"no GEMM peak for precision {precision!r} (known: fp32, {', '.join(KERNELS)})")
    return table.get(runtime, table[None])


def precision_peak(precision: str, threads: int, runtime: str | None = None, n: int = 2048,
                   repeats: int = 10, family: str | None = None) -> dict:
    """{'precision', 'gflops', 'threads', 'kernel', 'n', 'method'}: the best rate of an n x n
    product at `precision` on `threads` threads through the kernels of `runtime` (or of
    `family`: torch, onnxruntime, openvino). fp32 without a family is zoo.cost.gemm_peak.
    A ZooError when this runtime/CPU cannot run that precision (never a fallback figure)."""
    if precision == "fp32" and family is None:
        from zoo.cost import gemm_peak
        g = gemm_peak(threads, n=n, repeats=repeats)
        return {"precision": "fp32", "gflops": g["gflops"], "threads": threads, "kernel": f"torch {g['torch']} torch.mm fp32",
                "n": n, "method": g["method"]}
    family = family or kernel_family(precision, runtime)
    try:
        seconds, kernel = MEASURE[family](precision, threads, n, repeats)
    except ZooError:
        raise
    except Exception as exc:
        raise ZooError(f"{family}: cannot measure the {precision} GEMM peak ({one_line(exc)[:300]})") from None
    return {"precision": precision, "gflops": 2 * n ** 3 / seconds / 1e9, "threads": threads, "kernel": kernel,
            "n": n, "method": f"{n}x{n} by {n}x{n} {precision} product, best of {repeats}"
                              + (" (int8: integer operations per second, GOP/s)" if precision == "int8" else "")}


def fp32_peak(threads: int, runtime: str | None = None, repeats: int = 25) -> dict:
    """zoo.cost.gemm_peak's fields (gflops, method, threads, torch) for the best fp32 GEMM rate of
    torch.mm and, for a run on onnxruntime or openvino, that runtime's own fp32 MatMul; `kernel`
    names the faster, `candidates` keeps both rates ({kernel: gflops}). A runtime kernel that
    cannot be measured leaves torch.mm's figure (with `runtime_kernel_error` saying why)."""
    from zoo.cost import gemm_peak
    out = gemm_peak(threads, repeats=repeats)
    out["kernel"] = f"torch {out['torch']} torch.mm fp32"
    out["candidates"] = {out["kernel"]: out["gflops"]}
    if runtime in ("onnxruntime", "openvino"):
        try:
            own = precision_peak("fp32", threads, runtime, repeats=repeats, family=runtime)
        except ZooError as exc:
            out["runtime_kernel_error"] = str(exc)[:300]
            return out
        out["candidates"][own["kernel"]] = own["gflops"]
        if own["gflops"] > out["gflops"]:
            out["gflops"], out["kernel"] = own["gflops"], own["kernel"]
        out["method"] = f"the best of torch.mm and {runtime}'s fp32 MatMul (2048x2048), best of {repeats} each"
    return out
