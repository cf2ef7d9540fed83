"""Latency statistics: every sample kept, nothing clipped."""
from __future__ import annotations

import numpy as np


def summarize(samples_ms) -> dict:
    """count, min, max, mean, median, p90, p99, std (population) of latencies in ms.

    Percentiles use linear interpolation between closest ranks (numpy's default)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latency samples")
    return {
        "count": int(a.size),
        "min": float(a.min()),
        "max": float(a.max()),
        "mean": float(a.mean()),
        "median": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "std": float(a.std()),
    }


def throughput(batch_size: int, mean_ms: float) -> float:
    """Samples per second from the mean latency of one batch: 1000 * batch / mean_ms."""
    return 1000.0 * batch_size / mean_ms
