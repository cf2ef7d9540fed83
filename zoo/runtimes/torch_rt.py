"""PyTorch eager on the CPU: the reference every other runtime is compared with."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import ZooError
from zoo.runtimes.base import Compiled, ModelArtifacts, Runtime

if TYPE_CHECKING:
    import numpy as np


class TorchRuntime(Runtime):
    name = "torch"
    runs_onnx_graph = False  # eager PyTorch: the module, not the exported graph
    # bf16: CPU autocast (matmuls and convolutions in bfloat16, the rest fp32): the reference for
    # bf16 numerics; outputs returned as float32
    precisions = ("fp32", "bf16")
    package = "torch"
    peak_precisions = ("fp32", "bf16")  # torch.mm / conv2d on float32 or bfloat16 tensors
    peak_op_labels = {"MatMul": "torch.mm", "Conv": "torch conv2d"}
    peak_rank = 0

    @classmethod
    def unavailable_reason(cls):
        try:
            import torch  # noqa: F401
        except ImportError:
            return "the torch package is not installed in this environment"
        return None

    @classmethod
    def version(cls) -> str:
        import torch
        return torch.__version__

    def compile(self, artifacts: ModelArtifacts, cache: Path) -> Compiled:
        if artifacts.torch_module is None:
            raise ZooError("torch: no PyTorch module to run")
        self.module = artifacts.torch_module.eval()
        self.inputs, self.outputs = artifacts.input_names, artifacts.output_names
        self.compiled = Compiled(None, False, 0.0, {"mode": "eager", "grad": "inference_mode",
                                                    "autocast": "cpu bfloat16" if self.precision == "bf16" else None})
        return self.compiled

    def load(self) -> None:
        import torch
        torch.set_num_threads(self.threads)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np
        import torch
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = self.module(*[torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.inputs])
        outs = out if isinstance(out, (list, tuple)) else [out]
        return {n: (o.float() if o.is_floating_point() else o).numpy() for n, o in zip(self.outputs, outs)}

    @classmethod
    def peak_seconds(cls, kernel, precision: str, threads: int, repeats: int, budget_s: float) -> tuple[float, str]:
        """torch.mm / conv2d (padding 1) on tensors of `precision`, on `threads` threads."""
        import torch

        from zoo.cost import best_seconds
        from zoo.peak_kernels import kernel_inputs
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            xs, ws = kernel_inputs(kernel)
            x, w = torch.from_numpy(xs).to(dtype), torch.from_numpy(ws).to(dtype)
            if kernel.op == "MatMul":
                call = lambda: torch.mm(x, w)  # noqa: E731
            else:
                call = lambda: torch.nn.functional.conv2d(x, w, padding=1)  # noqa: E731
            with torch.inference_mode():
                seconds = best_seconds(call, repeats, budget_s)
        finally:
            torch.set_num_threads(old)
        return seconds, f"torch {torch.__version__} {'torch.mm' if kernel.op == 'MatMul' else 'conv2d'} {precision}"
