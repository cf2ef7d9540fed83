"""Write a checkpoint of a zoo model with random weights, in the format its adapter loads.

Speed does not depend on the weights' values, so a random checkpoint measures throughput and
latency when the official file cannot be had (no network, licence). Accuracy figures of such a
run are meaningless. BatchNorm statistics are re-estimated on a few structured inputs so that
activations keep a realistic range (a fresh BatchNorm on a deep net can overflow fp16 paths).

    .venvs/fcn8s/bin/python benchmarks/random_weights.py fcn8s work/fcn8s_random.pth
    invoke bench --model fcn8s --weights work/fcn8s_random.pth
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibration-size", type=int, nargs=2, metavar=("H", "W"), default=(256, 256))
    a = ap.parse_args(argv)
    import torch

    from zoo.batchnorm_stats import calibrate_all_bn, structured_images
    from zoo.fileutil import atomic_write_bytes
    from zoo.manifest import load_manifest
    import io

    torch.manual_seed(a.seed)
    adapter = load_manifest(a.model).adapter()
    net = adapter.build()
    net = calibrate_all_bn(net, [torch.from_numpy(structured_images(2, tuple(a.calibration_size), seed=a.seed + 1))])
    buf = io.BytesIO()
    torch.save(adapter.checkpoint_payload(net), buf)
    atomic_write_bytes(a.out, buf.getvalue())
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
