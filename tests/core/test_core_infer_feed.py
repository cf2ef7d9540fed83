"""The infer-only timing input (`--input`): dataset samples cycled, zeros, seeded random."""
from __future__ import annotations

import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.stages.infer import infer_feed as _infer_feed


def test_feeds():
    head = [np.full((2, 3, 3), i, np.float32) for i in range(3)]
    x, desc = _infer_feed("dataset", head, 5)
    assert x.shape == (5, 2, 3, 3) and [int(v[0, 0, 0]) for v in x] == [0, 1, 2, 0, 1] and "dataset" in desc
    z, desc = _infer_feed("zeros", head, 4)
    assert z.shape == (4, 2, 3, 3) and not z.any() and z.dtype == np.float32 and desc == "zeros"
    r1, desc = _infer_feed("random", head, 2)
    r2, _ = _infer_feed("random", head, 2)
    assert r1.dtype == np.float32 and np.array_equal(r1, r2) and r1.std() > 0.5 and "seed 0" in desc
    with pytest.raises(ZooError, match="--input must be"):
        _infer_feed("ones", head, 1)
