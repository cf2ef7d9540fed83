"""Per-operator profile of one batch size (as `trtexec --dumpProfile` or ONNX Runtime's profiler):
where the time of a call goes, by operator type, next to the FLOPs the ONNX graph gives each
type, so a run shows which operators keep a model from the GEMM peak.

A runtime that can profile implements `op_times(feeds, warmup, calls)` -> {op type: [total ms,
kernel count]} over `calls` timed calls (a profiling session of its own: the timing run is not
disturbed). `summarize_ops` turns that into the record's `op_profile` block. Operator types are
the runtime's own names after its graph fusions (ONNX Runtime: `Conv` includes fused
activations, `ReorderInput`/`ReorderOutput` are its blocked-layout conversions; OpenVINO:
`Convolution`, `ConvolutionBackpropData`, `Reorder`, `Subgraph` = fused elementwise)."""
from __future__ import annotations

# OpenVINO CPU node types -> the ONNX operator whose FLOPs zoo.cost counts
OPENVINO_TO_ONNX = {"Convolution": "Conv", "GroupConvolution": "Conv",
                    "ConvolutionBackpropData": "ConvTranspose", "GroupConvolutionBackpropData": "ConvTranspose",
                    "FullyConnected": "Gemm+MatMul", "MatMul": "Gemm+MatMul", "Gemm": "Gemm+MatMul"}
# ONNX Runtime CPU kernels that run fused ONNX operators (the NCHWc path keeps the name Conv)
ONNXRUNTIME_TO_ONNX = {"FusedConv": "Conv", "NhwcFusedConv": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul"}
TOP = 12  # operator types listed; the rest are summed into "(other)"


def summarize_ops(times: dict[str, list[float]], calls: int, batch_size: int,
                  flops_by_op: dict[str, float] | None = None, onnx_name: dict[str, str] | None = None) -> dict:
    """{"calls", "total_ms_per_call", "ops": [{op_type, ms_per_call, share, kernels_per_call,
    gflops?, gflops_of?}]} sorted by time; gflops (achieved) where the graph's FLOPs for the
    type are known: flops_per_sample[ONNX type] x batch / the time of every runtime type that
    runs that ONNX type (`onnx_name` maps a runtime's type to the ONNX one; "Gemm+MatMul" is both,
    for runtimes that merge them). When several runtime types share one ONNX type (OpenVINO's
    Convolution and GroupConvolution are both ONNX Conv) their FLOPs cannot be told apart: each
    row gets the group's rate and `gflops_of` names the group."""
    if calls < 1:
        raise ValueError("calls must be >= 1")
    total = sum(ms for ms, _ in times.values())
    flops = dict(flops_by_op or {})
    flops["Gemm+MatMul"] = flops.get("Gemm", 0) + flops.get("MatMul", 0)
    key_of = {op: (onnx_name or {}).get(op, op) for op in times}
    groups: dict[str, list[str]] = {}
    for op, key in key_of.items():
        if flops.get(key):
            groups.setdefault(key, []).append(op)
    group_ms = {key: sum(times[op][0] for op in ops) for key, ops in groups.items()}
    rows = []
    for op, (ms, kernels) in sorted(times.items(), key=lambda kv: -kv[1][0]):
        row = {"op_type": op, "ms_per_call": ms / calls, "share": ms / total if total else 0.0,
               "kernels_per_call": kernels / calls}
        key = key_of[op]
        if key in groups and group_ms[key] > 0:
            row["gflops"] = flops[key] * batch_size / (group_ms[key] / calls / 1e3) / 1e9
            if len(groups[key]) > 1:
                row["gflops_of"] = "+".join(sorted(groups[key]))
        rows.append(row)
    if len(rows) > TOP:
        rest = rows[TOP:]
        rows = rows[:TOP] + [{"op_type": "(other)", "ms_per_call": sum(r["ms_per_call"] for r in rest),
                              "share": sum(r["share"] for r in rest),
                              "kernels_per_call": sum(r["kernels_per_call"] for r in rest)}]
    return {"calls": calls, "total_ms_per_call": total / calls, "ops": rows}
