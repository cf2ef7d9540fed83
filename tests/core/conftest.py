"""Shared fixtures for the zoo core tests: a tiny calibrated conv+BN+upsample network and its
ONNX export (built once per session; each is a few KB and exports in about a second)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

IN_NAME, OUT_NAME = "images", "logits"
IN_SHAPE = (3, 8, 8)        # CHW; the output is (1, 16, 16)


class TinySegNet(nn.Module):
    """conv -> BN -> ReLU -> bilinear x2 upsample -> 1x1 conv: the op mix of the zoo's segmenters."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, momentum=None)   # momentum=None: cumulative average
        self.relu = nn.ReLU()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        return self.head(self.up(self.relu(self.bn(self.conv(x)))))


def make_tiny_model(seed: int = 0) -> nn.Module:
    """A TinySegNet with calibrated BatchNorm statistics (a freshly initialised BN has mean 0 /
    var 1, which with random convs can give near-constant outputs), in eval mode."""
    torch.manual_seed(seed)
    m = TinySegNet()
    m.train()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _ in range(4):
            m(torch.randn(8, *IN_SHAPE, generator=gen) * 2.0 + 0.5)
    return m.eval()


def random_batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *IN_SHAPE)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_model():
    return make_tiny_model()


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory):
    """(path, opset) of the tiny model exported once with a dynamic batch axis, opset 17."""
    from zoo.onnx_export import export_onnx
    path = tmp_path_factory.mktemp("onnx17") / "tiny.onnx"
    export_onnx(tiny_model, random_batch(2), path, IN_NAME, OUT_NAME, opset=17, dynamic_batch=True,
                metadata={"zoo.model": "tiny", "zoo.answer": 42})
    return path


@pytest.fixture
def restore_torch_threads():
    """TorchRuntime.load() sets torch's global thread count; put it back after the test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def make_batch():
    """random_batch(n, seed) -> float32 (n, 3, 8, 8)."""
    return random_batch


@pytest.fixture(scope="session")
def make_model():
    """make_tiny_model(seed) -> a fresh calibrated TinySegNet in eval mode."""
    return make_tiny_model
