"""The INT8 calibration table ONNX Runtime's TensorRT execution provider reads for a graph without
Q/DQ nodes: each activation tensor's dynamic range, measured on the run's calibration samples
(zoo.quant.calibration: the same samples every int8 runtime calibrates on).

It is made here, on the CPU: onnxruntime.quantization's calibrator (create_calibrator) runs an
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
import tempfile
from pathlib import Path

from zoo.cache import ensure_entry
from zoo.errors import ZooError, one_line
from zoo.fileutil import file_digest

TABLE = "calibration.flatbuffers"
# The calibrator keeps every sample's intermediate outputs until the end of a collect_data() call,
# which then folds them into its ranges: feeding the samples in chunks bounds the memory on large
# graphs. (Its own max_intermediate_outputs option is not used: in onnxruntime 1.31 it discards
# the collected outputs without folding them in, so the ranges would miss samples.)
CHUNK = 4


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod
    try:
        return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile}[name]
    except KeyError:
        raise ZooError(f"TensorRT calibration: unknown calibration method {name!r}") from None


def _extra_options(method: str) -> dict:
    return {"symmetric": True}


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over the next `limit` samples (one per
    call) of the shared iterator `feeds`."""

    def __init__(self, feeds, limit: int):
        self.feeds, self.left = feeds, limit

    def get_next(self):
        if self.left == 0:
            return None
        self.left -= 1
        return next(self.feeds, None)


def table_key(onnx_sha256: str, calibration) -> str:
    import onnxruntime as ort
    parts = {"onnx": onnx_sha256, "calibration": calibration.key(), "method": calibration.method,
             "options": _extra_options(calibration.method), "onnxruntime": ort.__version__, "format": 1}
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
    """Run the calibrator over the samples and write the table's three files into out_dir."""
    from onnxruntime.quantization import create_calibrator, write_calibration_table
    with tempfile.TemporaryDirectory(prefix="zoo-trtcalib-") as tmp:
        try:
            calibrator = create_calibrator(Path(onnx_path), [], augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                           calibrate_method=_method(calibration.method),
                                           extra_options=_extra_options(calibration.method))
            calibrator.set_execution_providers(["CPUExecutionProvider"])
            feeds, n = calibration.feeds(1), len(calibration)
            for _ in range(0, n, CHUNK):  # each call folds its chunk into the ranges
                calibrator.collect_data(_Reader(feeds, CHUNK))
            ranges = calibrator.compute_data()
        except ZooError:
            raise
        except Exception as exc:
            raise ZooError(f"{onnx_path}: TensorRT calibration failed ({one_line(exc)[:300]})") from None
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
