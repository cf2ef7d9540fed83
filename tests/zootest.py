"""Assertions shared by the models' bad-input tests."""
from __future__ import annotations

from pathlib import Path


def last_json(proc) -> dict:
    """The result record a successful `python -m zoo run` printed the path of (its last line)."""
    import json
    return json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())


def writable_copy(src: Path, dest: Path) -> Path:
    """A writable copy of a (read-only, built-in) sample tree, to damage in bad-input tests."""
    import shutil
    shutil.copytree(src, dest)
    for p in Path(dest).rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return Path(dest)


def result_files(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if p.is_file()]


def assert_clean_failure(proc, out, *needles, code=2) -> str:
    """A failed CLI run: exit `code`, last stderr line `error: ...` containing every needle,
    no traceback, and no (partial) result file under `out`. Returns that line."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert str(n) in last, (n, last)
    assert result_files(out) == [], "no (partial) result may be written"
    return last


def reference_keys(path: Path) -> dict[str, list[int]]:
    """A state_dict key list file (`name [d0, d1, ...]` a line) -> {name: shape}, in file order."""
    out = {}
    for line in Path(path).read_text().splitlines():
        name, shape = line.split(" ", 1)
        out[name] = [int(s) for s in shape.strip("[] ").split(",") if s.strip()]
    return out


def calibrate_bn(net, batches):
    """Reset every BatchNorm2d's running statistics and re-estimate them as the cumulative average
    over `batches` (torch tensors) in train mode, so a randomly initialised network gives spread-out
    logits rather than flat ones; returns the network in eval mode."""
    import torch
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration passes
    net.train()
    with torch.no_grad():
        for x in batches:
            net(x)
    return net.eval()


def calibrate_all_bn(net, batches):
    """As calibrate_bn, but with only the BatchNorms in train mode: OpenMMLab backbones keep their
    frozen stages in eval mode under .train(), and dropout stays off."""
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


def structured_images(n: int, size: tuple[int, int], seed: int = 0, blocks: int = 1):
    """(n, 3, H, W) float32 model inputs in the normalised range: smooth waves plus `blocks`
    bright rectangles (a calibration/parity input with structure, unlike white noise)."""
    import numpy as np
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
