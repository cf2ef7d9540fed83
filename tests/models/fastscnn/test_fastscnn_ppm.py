"""The pyramid pooling: our exact export against nn.AdaptiveAvgPool2d (upstream's numerics), and
the guide's fixed-AvgPool patch shown to be a different computation (FACTS.md s.3)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.fastscnn.model import PyramidPooling, adaptive_windows, guide_windows
from zoo.onnx_export import export_onnx

SIZES = [(32, 64), (4, 8), (7, 13), (33, 65), (5, 3)]   # 32x64: the PPM input of a 1024x2048 image


class ReferencePPM(nn.Module):
    """Upstream's PyramidPooling, written independently: AdaptiveAvgPool2d(s) -> 1x1 conv -> BN -> ReLU
    -> bilinear (align_corners) back, concatenated after the input."""

    def __init__(self, channels=128, bins=(1, 2, 3, 6)):
        super().__init__()
        self.pools = nn.ModuleList([nn.AdaptiveAvgPool2d(s) for s in bins])
        self.branches = nn.ModuleList([nn.Sequential(nn.Conv2d(channels, channels // 4, 1, bias=False),
                                                     nn.BatchNorm2d(channels // 4), nn.ReLU()) for _ in bins])

    def forward(self, x):
        feats = [x]
        for pool, branch in zip(self.pools, self.branches):
            feats.append(F.interpolate(branch(pool(x)), x.shape[2:], mode="bilinear", align_corners=True))
        return torch.cat(feats, 1)


def _pair(mode="exact", seed=0):
    """Our PyramidPooling and the reference with the same random conv/BN parameters (BN statistics
    random too, so the branches are not flat), both in eval mode."""
    g = torch.Generator().manual_seed(seed)
    ours, ref = PyramidPooling(128, mode=mode).eval(), ReferencePPM().eval()
    with torch.no_grad():
        for mine, theirs in zip(ours.convs, ref.branches):
            mine.conv.weight.copy_(torch.randn(mine.conv.weight.shape, generator=g) * 0.2)
            bn = mine.bn
            bn.weight.copy_(torch.rand(32, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(32, generator=g) * 0.5)
            bn.running_mean.copy_(torch.randn(32, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(32, generator=g) * 0.5 + 0.5)
            theirs[0].weight.copy_(mine.conv.weight)
            theirs[1].load_state_dict(bn.state_dict())
    return ours, ref


def _x(n, h, w, seed=0):
    return torch.randn(n, 128, h, w, generator=torch.Generator().manual_seed(seed)) + 0.3


def test_windows_are_adaptive_avg_pool_windows():
    # FACTS.md: at 32 rows, bin 3: adaptive [0,11),[10,22),[21,32) vs the guide's k=12,s=10
    assert adaptive_windows(32, 3) == [(0, 11), (10, 22), (21, 32)]
    assert guide_windows(32, 3) == [(0, 12), (10, 22), (20, 32)]
    assert adaptive_windows(4, 6) == [(0, 1), (0, 2), (1, 2), (2, 3), (2, 4), (3, 4)]   # more bins than rows
    for h, w in SIZES:
        x = _x(1, h, w)
        for s in (1, 2, 3, 6):
            want = nn.AdaptiveAvgPool2d(s)(x)
            got = torch.stack([torch.stack([x[:, :, a:b, c:d].mean((2, 3)) for c, d in adaptive_windows(w, s)], -1)
                               for a, b in adaptive_windows(h, s)], -2)
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("opset", [17, 11])
def test_exact_ppm_onnx_equals_adaptive_avg_pool(tmp_path, opset):
    """Exported at each size (the graph is fixed to it), ONNX Runtime == the AdaptiveAvgPool2d
    reference in PyTorch, for batch 2 (export) and 3 (dynamic batch)."""
    ours, ref = _pair()
    for h, w in SIZES[:4]:
        path = tmp_path / f"ppm_{h}x{w}.onnx"
        export_onnx(ours, _x(2, h, w).numpy(), path, "x", "y", opset, dynamic_batch=True)
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert "MatMul" in ops and not {o for o in ops if "Pool" in o}, ops   # no pooling op at all
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for n in (2, 3):
            x = _x(n, h, w, seed=n)
            with torch.no_grad():
                want = ref(x).numpy()
                eager = ours(x).numpy()
            got = sess.run(["y"], {"x": x.numpy()})[0]
            assert got.shape == want.shape == (n, 256, h, w)
            scale = np.abs(want).max()
            assert np.abs(got - want).max() / scale < 2e-6, (h, w, n)
            assert np.abs(eager - want).max() / scale < 2e-6, (h, w, n)
            branches = want[:, 128:]
            assert branches.std() > 0.05        # the pooled branches carry real values


def test_guide_avgpool_is_not_adaptive_pooling_at_32x64():
    x = _x(2, 32, 64)
    guide, _ = _pair("guide_avgpool")
    for i, s in enumerate((1, 2, 3, 6)):
        want = nn.AdaptiveAvgPool2d(s)(x)
        got = guide.pool_guide(x, i)
        assert got.shape == want.shape
        rel = float((got - want).abs().max() / want.abs().max())
        if s in (1, 2):
            assert rel < 1e-5, (s, rel)        # divisible sizes: the same windows (up to summation order)
        else:
            assert rel > 1e-3, (s, rel)        # bins 3 and 6 average other windows
    ours, ref = _pair("guide_avgpool")
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert float((a - b).abs().max() / b.abs().max()) > 1e-3


def test_guide_avgpool_freezes_at_the_first_size_and_needs_enough_rows():
    ours, _ = _pair("guide_avgpool")
    with torch.no_grad():
        ours(_x(1, 32, 64))
        assert ours.guide_frozen_at == (32, 64)
        assert ours._guide_pools[2] == ((12, 22), (10, 21))     # bin 3: kernel (12, 22), stride (10, 21)
        ours(_x(1, 40, 80))                                      # a later size keeps the first pools,
        assert ours.guide_frozen_at == (32, 64)                  # as the patch's growing ModuleList does
        assert ours.pool_guide(_x(1, 40, 80), 3).shape[-2:] == (7, 7)   # (so bin 6 then gives 7x7 cells)
    fresh, _ = _pair("guide_avgpool")
    with pytest.raises(ValueError, match="fewer than bin 6"):
        fresh(_x(1, 4, 8))                                       # the 256x128 sample: PPM input 4x8
