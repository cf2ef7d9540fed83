"""A float16 copy of an ONNX graph for the fp16 runs of ONNX Runtime's CUDA execution provider
(CUDA has no fp16 switch of its own: it runs the graph's types).

The converter is ONNX Runtime's own, onnxruntime.transformers.float16.convert_float_to_float16
(onnxconverter-common is not installed in the model environments; the two share the algorithm),
with keep_io_types=True: the graph's inputs and outputs stay float32 behind Cast nodes, so feeds,
verify and postprocessing are unchanged. The converter's default op block list (ops without
float16 kernels) stays float32, and so do the --keep-fp32 nodes (node_block_list). It appends
the I/O Casts after the other nodes, which ONNX Runtime accepts but onnx.checker (nodes in
topological order) does not: the graph is sorted before it is saved and checked.

The copy is a zoo.cache entry `converted/fp16/<key>/model.fp16.onnx`, keyed by the graph's
sha256, the kept-fp32 nodes and the converter's version."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from zoo.cache import ensure_entry
from zoo.errors import ZooError, one_line
from zoo.fileutil import file_digest

FILE = "model.fp16.onnx"


def fp16_key(onnx_sha256: str, keep_fp32: tuple[str, ...] = ()) -> str:
    import onnxruntime as ort
    parts = {"onnx": onnx_sha256, "keep_fp32": sorted(keep_fp32), "keep_io_types": True,
             "converter": f"onnxruntime.transformers.float16 {ort.__version__}", "format": 1}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def convert(model, keep_fp32: tuple[str, ...] = ()):
    """The float16 ModelProto of `model` (float32 I/O kept), topologically sorted and checked."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel
    missing = sorted(set(keep_fp32) - {n.name for n in model.graph.node})
    if missing:
        raise ZooError(f"--keep-fp32: no node named {', '.join(missing)} in the graph")
    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=list(keep_fp32) or None)
    sorted_model = OnnxModel(converted)
    sorted_model.topological_sort()
    onnx.checker.check_model(sorted_model.model)
    return sorted_model.model


def _verify(entry: Path) -> None:
    import onnx
    try:
        onnx.checker.check_model(str(entry / FILE))
    except Exception as exc:
        raise ZooError(f"{entry / FILE}: not a valid ONNX model ({one_line(exc)[:200]})") from None


def fp16_graph(onnx_path: Path, cache: Path, keep_fp32: tuple[str, ...] = ()) -> Path:
    """The float16 copy of onnx_path, converted once (see the module docstring)."""
    import onnx
    entry = Path(cache) / "converted" / "fp16" / fp16_key(file_digest(Path(onnx_path)), tuple(keep_fp32))

    def build(tmp: Path) -> None:
        try:
            model = convert(onnx.load(str(onnx_path)), tuple(keep_fp32))
        except ZooError:
            raise
        except Exception as exc:
            raise ZooError(f"{onnx_path}: float16 conversion failed ({one_line(exc)[:300]})") from None
        onnx.save(model, str(tmp / FILE))

    ensure_entry(entry, build, verify=_verify)
    return entry / FILE
