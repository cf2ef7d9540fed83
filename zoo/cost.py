"""The cost of a model and the machine's limit, so a run shows how far it is from the hardware:

- `onnx_cost(path, input_shape)`: multiply-accumulates of Conv / ConvTranspose / Gemm / MatMul
  (the compute-bound operators) per sample, from the ONNX graph with shapes inferred for a
  concrete input, FLOPs = 2 x MACs, and the parameter count (initializers);
- `copy_bandwidth()`: the main-memory copy rate; the compute peak a run reads is zoo.peaks' (the
  best of several MatMul and convolution kernels through every installed runtime, cached).
Elementwise operators, pooling and resizes are not counted (memory-bound; see the bytes moved,
`activation_bytes`, for models such as Fast-SCNN whose depthwise layers are bandwidth-bound)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from zoo.errors import ZooError, one_line


def _dims(vi) -> list[int] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        out.append(int(d.dim_value))
    return out


def onnx_cost(path: Path, input_shape: list[int]) -> dict:
    """{'flops_per_sample', 'macs_per_sample', 'params', 'by_op': {op: flops}, 'activation_bytes'}
    for a batch-1 input of `input_shape` (CHW, without the batch axis)."""
    import onnx
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ZooError(f"{path}: cannot read the ONNX file ({one_line(exc)[:200]})") from None
    inits = {t.name: t for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    if len(graph_inputs) != 1:
        raise ZooError(f"{path}: cost needs a single-input graph, found {len(graph_inputs)} inputs")
    dims = graph_inputs[0].type.tensor_type.shape.dim
    for d, v in zip(dims, [1, *input_shape]):
        d.ClearField("dim_param")
        d.dim_value = int(v)
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:
        raise ZooError(f"{path}: shape inference failed ({one_line(exc)[:200]})") from None
    shapes = {vi.name: _dims(vi) for vi in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    for name, t in inits.items():
        shapes[name] = list(t.dims)
    macs_by_op: dict[str, int] = {}
    act_bytes = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if out:
            act_bytes += 4 * int(np.prod(out))
        macs = 0
        if node.op_type in ("Conv", "ConvTranspose"):
            w = shapes.get(node.input[1])
            if w is None or out is None:
                continue
            k = int(np.prod(w[2:]))
            if node.op_type == "Conv":          # w: [Cout, Cin/g, kh, kw]
                macs = int(np.prod(out)) * w[1] * k
            else:                               # w: [Cin, Cout/g, kh, kw]
                inp = shapes.get(node.input[0])
                if inp is None:
                    continue
                macs = int(np.prod(inp)) * w[1] * k
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0])
            if a is None or out is None:
                continue
            macs = int(np.prod(out)) * a[-1]
        if macs:
            macs_by_op[node.op_type] = macs_by_op.get(node.op_type, 0) + macs
    total = sum(macs_by_op.values())
    params = int(sum(int(np.prod(t.dims)) for t in inits.values()))
    return {"flops_per_sample": 2 * total, "macs_per_sample": total, "params": params,
            "by_op": {k: 2 * v for k, v in sorted(macs_by_op.items())}, "activation_bytes": act_bytes,
            "counted": "Conv, ConvTranspose, Gemm, MatMul (2 FLOPs per multiply-accumulate)"}


def best_seconds(call, repeats: int, budget_s: float | None = None) -> float:
    """Seconds of the fastest of `repeats` calls, after one untimed warm-up call (the GEMM peaks'
    timing: zoo.peaks); with `budget_s`, the calls stop once the timed ones
    have taken that long (after at least 3, or `repeats` if fewer)."""
    call()
    best, spent = float("inf"), 0.0
    for i in range(repeats):
        t0 = time.perf_counter()
        call()
        took = time.perf_counter() - t0
        best, spent = min(best, took), spent + took
        if budget_s is not None and spent >= budget_s and i + 1 >= min(3, repeats):
            break
    return best


def copy_bandwidth(mbytes: int = 256, repeats: int = 5) -> dict:
    """Best main-memory copy rate (read + write bytes per second, as STREAM's Copy) of a
    `mbytes` float32 array with numpy: the bound of bandwidth-limited models (depthwise layers)."""
    n = mbytes * (1 << 20) // 4
    a = np.ones(n, dtype=np.float32)
    b = np.empty_like(a)
    np.copyto(b, a)  # touch the pages
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return {"gbytes_per_s": 2 * a.nbytes / best / 1e9, "method": f"numpy copy of {mbytes} MiB float32, best of {repeats}"}
