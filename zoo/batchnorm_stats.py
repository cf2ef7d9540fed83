"""Random-weight networks that behave like trained ones where it matters for testing and speed
runs: structured inputs, and BatchNorm statistics re-estimated on them (a freshly initialised
BatchNorm gives flat logits whose argmax is noise, and can overflow reduced-precision paths).
Needs torch (imported by the callers' environments only)."""
from __future__ import annotations

import numpy as np


def calibrate_all_bn(net, batches):
    """Reset every BatchNorm's running statistics and re-estimate them as the cumulative average
    over `batches` (torch tensors) with only the BatchNorms in train mode (OpenMMLab backbones
    keep frozen stages in eval mode under .train(); dropout stays off); returns net in eval mode."""
    import torch
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.eval()
    for m in bns:
        m.train()
    with torch.no_grad():
        for x in batches:
            net(x)
    return net.eval()


def structured_images(n: int, size: tuple[int, int], seed: int = 0, blocks: int = 1) -> np.ndarray:
    """(n, 3, H, W) float32 model inputs in the normalised range: smooth waves plus `blocks`
    bright rectangles (a calibration/parity input with structure, unlike white noise)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, 3, h, w), np.float32)
    for i in range(n):
        for c in range(3):
            fy, fx, ph = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6.3)
            out[i, c] = 1.5 * np.sin(yy / h * fy * 3.1416 + ph) * np.cos(xx / w * fx * 3.1416)
        for _ in range(blocks):
            by, bx = rng.integers(0, h // 2), rng.integers(0, w // 2)
            out[i, :, by:by + h // 3, bx:bx + w // 3] += rng.normal(0, 1.0, (3, 1, 1)).astype(np.float32)
    return out
