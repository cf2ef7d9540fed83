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


def read_until(proc, marker: str, seconds: float = 300) -> list[str]:
    """The stderr lines of a background `python -m zoo` process read until one starts with `marker`
    (the stage a signal test waits for), the end of its stderr, or `seconds`."""
    import time
    lines, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if line.strip().startswith(marker):
            break
    return lines


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


from zoo.batchnorm_stats import calibrate_all_bn, structured_images  # noqa: E402,F401  (re-exported)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    import struct
    import zlib
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(path: Path, width: int = 40000, height: int = 40000) -> Path:
    """A valid PNG whose header declares width x height (over 2^30 pixels by default), a few bytes
    in all: what OpenCV and PIL refuse to decode (the readers must say so in one line)."""
    import struct
    import zlib
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                           + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))
    return Path(path)


def export_on_calibration(net, cal, path: Path, output_name: str) -> Path:
    """`net` with the BatchNorm statistics of the calibration samples `cal` (one train-mode pass;
    random BatchNorm statistics give flat activations that quantize to nothing), exported to ONNX
    at `path` with a dynamic batch axis."""
    import numpy as np
    import torch

    from zoo.onnx_export import export_onnx
    x = torch.from_numpy(np.stack(list(cal.inputs())))
    net.train()
    with torch.no_grad():
        net(x)
    net.eval()
    export_onnx(net, x[:2].numpy(), path, cal.input_name, output_name, opset=17, dynamic_batch=True)
    return path

