"""zoo.cost: FLOPs and parameters from an ONNX graph against hand-computed values, and the GEMM
peak's fields (no timing value is asserted)."""
from __future__ import annotations

import pytest
import torch

from zoo.cost import onnx_cost
from zoo.errors import ZooError
from zoo.onnx_export import export_onnx


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)              # 8*16*16 outputs x 3*9 MACs
        self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)       # 8*16*16 outputs x 1*9
        self.up = torch.nn.ConvTranspose2d(8, 4, 2, stride=2)         # 8*16*16 inputs x 4*4
        self.fc = torch.nn.Linear(4 * 32 * 32, 10)                    # 4096 x 10

    def forward(self, x):
        y = self.up(torch.relu(self.dw(self.conv(x))))
        return self.fc(y.flatten(1))


def test_flops_and_params_hand_computed(tmp_path):
    net = Toy().eval()
    path = tmp_path / "toy.onnx"
    export_onnx(net, torch.zeros(2, 3, 16, 16).numpy(), path, "x", "y", 17, True)
    c = onnx_cost(path, [3, 16, 16])
    conv = 8 * 16 * 16 * 3 * 9 + 8 * 16 * 16 * 1 * 9
    convt = 8 * 16 * 16 * 4 * 4
    gemm = 4 * 32 * 32 * 10
    assert c["macs_per_sample"] == conv + convt + gemm
    assert c["flops_per_sample"] == 2 * (conv + convt + gemm)
    assert c["by_op"]["Conv"] == 2 * conv and c["by_op"]["ConvTranspose"] == 2 * convt
    assert c["by_op"].get("Gemm", 0) + c["by_op"].get("MatMul", 0) == 2 * gemm
    assert c["params"] == sum(p.numel() for p in net.parameters())
    assert c["activation_bytes"] > 0


def test_cost_scales_with_the_input_size(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 4, 3, padding=1)).eval()
    path = tmp_path / "c.onnx"
    export_onnx(net, torch.zeros(1, 3, 8, 8).numpy(), path, "x", "y", 17, True, dynamic_spatial=True)
    small, big = onnx_cost(path, [3, 8, 8]), onnx_cost(path, [3, 32, 16])
    assert small["macs_per_sample"] == 64 * (4 * 3 + 4 * 4 * 9)
    assert big["macs_per_sample"] == 8 * small["macs_per_sample"]


def test_unreadable_file(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"junk")
    with pytest.raises(ZooError, match=r"x\.onnx: cannot read the ONNX file"):
        onnx_cost(tmp_path / "x.onnx", [3, 8, 8])


def test_copy_bandwidth_fields():
    from zoo.cost import copy_bandwidth
    b = copy_bandwidth(mbytes=8, repeats=2)
    assert b["gbytes_per_s"] > 0 and "8 MiB" in b["method"]
