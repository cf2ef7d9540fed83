"""The upstream protocol's foreground decision is upstream's own, bit for bit: metrics.py iou_score
does `torch.sigmoid(output)` in float32 and thresholds at 0.5. The adapter reproduces that set
without torch (logits > UPSTREAM_LOGIT_THRESHOLD); here it is checked against torch.sigmoid at the
boundary, on a neighbourhood of 2**21 float32 values around it, and on random arrays holding
denormals, +-0, +-inf and NaN, through the adapter's real postprocess."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.unetpp.adapter import UPSTREAM_LOGIT_THRESHOLD, upstream_foreground
from zoo.manifest import load_manifest

T_BITS = int(np.float32(UPSTREAM_LOGIT_THRESHOLD).view(np.uint32))


def torch_decision(x: np.ndarray) -> np.ndarray:
    """Upstream's line, as written: torch.sigmoid(output).data.cpu().numpy() > 0.5."""
    return torch.sigmoid(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).data.cpu().numpy() > 0.5


def from_bits(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def postprocess_upstream(x: np.ndarray) -> np.ndarray:
    """The adapter's real postprocess on logits shaped as the model's (N=1 squeezed, 1 channel)."""
    flat = np.asarray(x, np.float32).ravel()
    out = load_manifest("unetpp").adapter().postprocess(flat.reshape(1, 1, -1), None)["upstream"]
    return out.ravel()


def test_the_threshold_is_where_torch_sigmoid_leaves_one_half():
    assert T_BITS == 0x33C00000 and float(UPSTREAM_LOGIT_THRESHOLD) == 1.5 * 2.0 ** -24
    below, at, above = from_bits([T_BITS - 1, T_BITS, T_BITS + 1])
    assert torch_decision(np.array([below, at, above])).tolist() == [False, False, True]
    assert postprocess_upstream(np.array([below, at, above])).tolist() == [False, False, True]


def test_logits_where_numpy_sigmoid_said_background_are_upstream_foreground():
    # the old float32 numpy formula: 1 / (1 + exp(-x)) > 0.5 is False on (T, 1.2318974e-07)
    x = np.array([9e-8, 1e-7, 1.2e-7], np.float32)
    assert not ((np.float32(1) / (np.float32(1) + np.exp(-x))) > 0.5).any()
    assert torch_decision(x).all() and postprocess_upstream(x).all()


def test_every_float32_around_the_threshold():
    bits = np.arange(T_BITS - 2 ** 20, T_BITS + 2 ** 20, dtype=np.uint32)
    x = from_bits(bits)
    np.testing.assert_array_equal(postprocess_upstream(x), torch_decision(x))
    np.testing.assert_array_equal(upstream_foreground(x), bits > T_BITS)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_float32_including_denormals_zeros_infinities_and_nan(seed):
    rng = np.random.default_rng(seed)
    n = 1 << 20
    parts = [
        from_bits(rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32)),   # every bit pattern: NaNs too
        from_bits(rng.integers(1, 0x00800000, n // 4, dtype=np.uint32)),              # positive denormals
        -from_bits(rng.integers(1, 0x00800000, n // 4, dtype=np.uint32)),             # negative denormals
        rng.normal(0, 1e-7, n).astype(np.float32),                                    # around the boundary
        rng.normal(0, 10, n).astype(np.float32),                                      # ordinary logits
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 0.5, -0.5,
                  np.finfo(np.float32).max, -np.finfo(np.float32).max,
                  np.finfo(np.float32).tiny, np.finfo(np.float32).smallest_subnormal], np.float32),
    ]
    x = rng.permutation(np.concatenate(parts))
    np.testing.assert_array_equal(postprocess_upstream(x), torch_decision(x))


def test_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, np.finfo(np.float32).smallest_subnormal], np.float32)
    assert postprocess_upstream(x).tolist() == [False, False, True, False, False, False]
    assert torch_decision(x).tolist() == [False, False, True, False, False, False]
