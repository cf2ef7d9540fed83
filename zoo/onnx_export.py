"""ONNX export (torch.onnx, TorchScript-based exporter, so the guides' opset 11 is reachable),
checking, metadata stamping, caching by content, and ONNX Runtime vs PyTorch parity."""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np

from zoo.cache import ensure_entry, publish_file
from zoo.comparator import Tolerance, compare
from zoo.fileutil import temp_file_beside
from zoo.errors import ZooError, one_line
from zoo.fileutil import file_digest

EXPORTER = "torch.onnx.export (TorchScript exporter, dynamo=False)"


def opset_problem(opset: int) -> str | None:
    """None when the exporter (torch.onnx's TorchScript exporter) can export to `opset`, else why
    not: checked before any work, not after the weights and data were loaded."""
    try:
        from torch.onnx import _constants
        low, high = _constants.ONNX_MIN_OPSET, getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET",
                                                       _constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):
        return None  # the exporter says so itself at export
    if not low <= opset <= high:
        return f"the exporter ({EXPORTER}) exports opsets {low} to {high}"
    return None


def check_onnx(path: Path) -> str:
    """onnx.checker with full_check (shape inference); a broken file is a one-line ZooError."""
    import onnx
    path = Path(path)
    if not path.is_file():
        raise ZooError(f"{path}: ONNX file not found")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ZooError(f"{path}: not a valid ONNX model ({one_line(exc)[:300]})") from None
    return "full_check_passed"


def onnx_io(path: Path) -> tuple[list[str], list[str], int]:
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    ins = [i.name for i in m.graph.input if i.name not in inits]
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ins, [o.name for o in m.graph.output], opset


def export_key(weights_sha256: str, options: dict, opset: int, dynamic_batch: bool, extra: str = "") -> str:
    import torch
    blob = json.dumps({"w": weights_sha256, "o": options, "opset": opset, "dyn": dynamic_batch,
                       "torch": torch.__version__, "exporter": EXPORTER, "x": extra}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def export_onnx(module, example: np.ndarray, path: Path, input_name: str, output_name: str,
                opset: int, dynamic_batch: bool, metadata: dict | None = None,
                dynamic_spatial: bool = False) -> float:
    """Export module(example) to path atomically (written under a unique temporary name beside it,
    then renamed); stamp metadata_props; return seconds taken."""
    import onnx
    import torch
    path = Path(path)
    tmp = temp_file_beside(path)
    axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else {}
    if dynamic_spatial:  # NCHW in and out (dense prediction at the input's size)
        for name in (input_name, output_name):
            axes.setdefault(name, {}).update({2: "height", 3: "width"})
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module.eval(), (torch.from_numpy(example),), str(tmp),
                              input_names=[input_name], output_names=[output_name],
                              dynamic_axes=axes or None, opset_version=opset, do_constant_folding=True,
                              dynamo=False)
        model = onnx.load(str(tmp))
        for k, v in (metadata or {}).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = str(k), str(v)
        onnx.save(model, str(tmp))
        tmp.replace(path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, Exception) and not isinstance(exc, ZooError):
            raise ZooError(f"{path}: ONNX export failed ({one_line(exc)[:300]})") from None
        raise
    return time.perf_counter() - t0


def apply_edit(src: Path, dst: Path, edit) -> dict:
    """Write an edited copy of src to dst: `edit(model_proto)` changes it in place and returns a
    description of the change; the result must still pass the checker. The copy is written under
    a unique temporary name beside dst and renamed over it (concurrent runs writing the same
    edit each publish a whole file; a reader never sees a partial one)."""
    import onnx
    model = onnx.load(str(src))
    info = edit(model) or {}

    def write(tmp: Path) -> None:
        onnx.save(model, str(tmp))
        check_onnx(tmp)

    publish_file(Path(dst), write)
    return info


def ensure_onnx(module, example: np.ndarray, cache: Path, key: str, input_name: str, output_name: str,
                opset: int, dynamic_batch: bool, metadata: dict, dynamic_spatial: bool = False) -> dict:
    """Export once per key into the cache entry `export/<key>/` (zoo.cache: built once under a
    lock by concurrent runs, published by a rename, verified against its sidecar and the ONNX
    checker before every use; a damaged entry is rebuilt with a warning)."""
    entry = cache / "export" / key
    path = entry / "model.onnx"
    seconds = 0.0

    def build(tmp: Path) -> None:
        nonlocal seconds
        seconds = export_onnx(module, example, tmp / "model.onnx", input_name, output_name, opset, dynamic_batch,
                              metadata, dynamic_spatial)

    cached = ensure_entry(entry, build, verify=lambda folder: check_onnx(folder / "model.onnx"))
    return {"format": "onnx", "exporter": EXPORTER, "opset": opset, "input_names": [input_name],
            "output_names": [output_name], "dynamic_batch": dynamic_batch, "dynamic_spatial": dynamic_spatial, "path": str(path),
            "onnx_sha256": file_digest(path), "cached": cached, "seconds": round(seconds, 3),
            "checker": "full_check_passed"}


def parity(reference: np.ndarray, candidate: np.ndarray, rtol: float, atol: float) -> dict:
    """The numerics of two outputs of the same batch, through the one comparator (zoo.comparator;
    decisions are compared on predictions: zoo.stages.verify).

    max_rel_diff = max|c - r| / max|r| (relative to the output's scale, stable near zero);
    passed = every element within atol + rtol * max|r|."""
    return compare(reference, candidate, Tolerance(rtol, atol), context="parity").record()
