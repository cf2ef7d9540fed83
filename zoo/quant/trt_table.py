"""The INT8 calibration table ONNX Runtime's TensorRT execution provider reads for a graph without
Q/DQ nodes: each activation tensor's dynamic range, measured on the run's calibration samples
(zoo.quant.calibration_set: the same samples every int8 runtime calibrates on).

It is made here, on the CPU: onnxruntime.quantization's calibrator (zoo.quant.ort.calibrate) runs an
augmented copy of the graph with the CPU execution provider over the samples, and
onnxruntime.quantization.write_calibration_table writes the table. That function writes three
files: `calibration.flatbuffers` (what the TensorRT EP reads when
trt_int8_use_native_calibration_table is False: ReadDynamicRange parses a TrtTable flatbuffer of
{tensor name: max range as a string}), `calibration.cache` (the same as text) and
`calibration.json` (the calibrator's full ranges). The EP opens the table at
GetCachePath(trt_engine_cache_path, trt_int8_calibration_table_name), i.e. the name is joined to
the engine cache folder (onnxruntime/core/providers/tensorrt: tensorrt_execution_provider.cc,
tensorrt_execution_provider_utils.h).

write_calibration_table stores max(highest, lowest) per tensor, which is the tensor's absolute
range only when the calibrator's ranges are symmetric (-r, r): the calibrator runs symmetric, as
TensorRT's INT8 activations are.

The table is a zoo.cache entry `quantized/tensorrt/<key>/`, keyed by the graph's sha256, the
calibration's key(), the method settings and the ONNX Runtime version (its calibrator)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from zoo.cache import ensure_entry
from zoo.errors import ZooError, one_line
from zoo.fileutil import file_digest

TABLE = "calibration.flatbuffers"
# write_calibration_table keeps max(highest, lowest): the ranges must be symmetric (-r, r)
CALIBRATOR_OPTIONS = {"symmetric": True}


def table_key(onnx_sha256: str, calibration) -> str:
    import onnxruntime as ort
    parts = {"onnx": onnx_sha256, "calibration": calibration.key(), "method": calibration.method,
             "options": CALIBRATOR_OPTIONS, "onnxruntime": ort.__version__, "format": 1}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def read_table(path: Path) -> dict[str, float]:
    """{tensor name: dynamic range} of a calibration.flatbuffers file, parsed as the EP parses it
    (the value is a decimal string read with std::stof)."""
    from onnxruntime.quantization.CalTableFlatBuffers.TrtTable import TrtTable
    buf = Path(path).read_bytes()
    try:
        table = TrtTable.GetRootAsTrtTable(buf, 0)
        return {table.Dict(i).Key().decode(): float(table.Dict(i).Value()) for i in range(table.DictLength())}
    except Exception as exc:  # a truncated or foreign file
        raise ZooError(f"{path}: not a TensorRT calibration table ({one_line(exc)[:200]})") from None


def _verify(entry: Path) -> None:
    ranges = read_table(entry / TABLE)
    if not ranges:
        raise ZooError(f"{entry / TABLE}: the calibration table is empty")


def build_table(onnx_path: Path, calibration, out_dir: Path) -> None:
    """The ranges of every tensor of the graph (zoo.quant.ort.calibrate over the samples, all
    operators, symmetric) written as the table's three files into out_dir."""
    from onnxruntime.quantization import write_calibration_table

    from zoo.quant.ort import calibrate
    ranges = calibrate(Path(onnx_path), calibration.feeds(1), calibration.method, op_types=[],
                       extra_options=CALIBRATOR_OPTIONS)
    if not len(ranges.data):
        raise ZooError(f"{onnx_path}: the calibrator measured no tensor")
    write_calibration_table(ranges, dir=str(out_dir))


def calibration_table(onnx_path: Path, calibration, cache: Path) -> Path:
    """The calibration.flatbuffers of this graph and calibration set, built once (see the module
    docstring)."""
    if calibration is None or len(calibration) == 0:
        raise ZooError(f"{onnx_path}: TensorRT int8 needs calibration samples")
    key = table_key(file_digest(Path(onnx_path)), calibration)
    entry = Path(cache) / "quantized" / "tensorrt" / key
    ensure_entry(entry, lambda tmp: build_table(onnx_path, calibration, tmp), verify=_verify)
    return entry / TABLE
