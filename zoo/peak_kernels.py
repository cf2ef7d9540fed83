"""The building blocks of the CPU peak kernels (zoo.peaks): a kernel's inputs, shapes and its
one-operator ONNX graph. The runtimes' peak_seconds hooks (zoo.runtimes) and zoo.peaks both import
this module, so that no runtime imports zoo.peaks. A kernel is a zoo.peaks.Kernel (its `op`,
MatMul or Conv, and its `size`: (n,) or (channels, side))."""
from __future__ import annotations

import numpy as np


def _rand(shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def kernel_inputs(k) -> tuple[np.ndarray, np.ndarray]:
    """(input X, weight W) of a kernel: standard normal float32 values, the same on every call."""
    xs, ws, _ = kernel_shapes(k)
    return _rand(xs, 0), _rand(ws, 1)


def kernel_shapes(k) -> tuple[tuple, tuple, tuple]:
    """(input, weight, output) shapes."""
    if k.op == "MatMul":
        n = k.size[0]
        return (n, n), (n, n), (n, n)
    c, s = k.size
    return (1, c, s, s), (c, c, 3, 3), (1, c, s, s)


def kernel_onnx(k, quantized: bool) -> bytes:
    """A one-MatMul / one-Conv ONNX graph, X (input) by W (initializer) -> Y; `quantized`: X through
    QuantizeLinear/DequantizeLinear (uint8, per tensor), W stored as int8 with a DequantizeLinear,
    and (Conv) Y through a QuantizeLinear/DequantizeLinear pair: the QDQ form of a statically
    quantized operator, which ONNX Runtime fuses into QLinearConv / MatMulIntegerToFloat."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    xs, ws, ys = kernel_shapes(k)
    x, w = kernel_inputs(k)
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]} if k.op == "Conv" else {}
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(xs))]
    output = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, list(ys))]
    if not quantized:
        nodes = [helper.make_node(k.op, ["X", "W"], ["Y"], **attrs)]
        inits = [numpy_helper.from_array(w, "W")]
    else:
        x_scale, w_scale = float(np.abs(x).max()) / 127.0, float(np.abs(w).max()) / 127.0
        reduce = ws[0] if k.op == "MatMul" else int(np.prod(ws[1:]))  # products added per output
        y_scale = 4.0 * float(np.sqrt(reduce)) / 127.0  # |Y| of standard normals: within 4 sigma
        inits = [numpy_helper.from_array(np.array(x_scale, np.float32), "x_scale"),
                 numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
                 numpy_helper.from_array(np.clip(np.round(w / w_scale), -127, 127).astype(np.int8), "W_q"),
                 numpy_helper.from_array(np.array(w_scale, np.float32), "w_scale"),
                 numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
                 numpy_helper.from_array(np.array(y_scale, np.float32), "y_scale"),
                 numpy_helper.from_array(np.array(128, np.uint8), "y_zero")]
        nodes = [helper.make_node("QuantizeLinear", ["X", "x_scale", "x_zero"], ["X_q"]),
                 helper.make_node("DequantizeLinear", ["X_q", "x_scale", "x_zero"], ["X_dq"]),
                 helper.make_node("DequantizeLinear", ["W_q", "w_scale", "w_zero"], ["W_dq"])]
        if k.op == "MatMul":
            nodes.append(helper.make_node("MatMul", ["X_dq", "W_dq"], ["Y"]))
        else:
            nodes += [helper.make_node("Conv", ["X_dq", "W_dq"], ["Y_f"], **attrs),
                      helper.make_node("QuantizeLinear", ["Y_f", "y_scale", "y_zero"], ["Y_q"]),
                      helper.make_node("DequantizeLinear", ["Y_q", "y_scale", "y_zero"], ["Y"])]
    graph = helper.make_graph(nodes, f"peak_{k.op.lower()}", inputs, output, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
