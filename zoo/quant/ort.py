"""int8 for ONNX Runtime: static QDQ quantization with onnxruntime.quantization, in small steps
that other code reuses (the runtime's compile, the per-layer diagnosis):

  prepare(onnx, out)                  ONNX Runtime's pre-processing (symbolic shape inference and
                                      optimisation): the graph every later step reads, so node and
                                      tensor names agree between calibration and quantization
  calibrate(prepared, feeds, method)  the activation range of every tensor to quantize, computed
                                      once (the costly part: the calibration samples run through
                                      an augmented copy of the graph)
  quantize_with_ranges(prepared, ranges, out, ...)
                                      a QDQ model from precomputed ranges, without calibrating
                                      again: a per-layer sensitivity loop quantizes many variants
                                      (one node left in fp32 each) from one calibration
  quantize_qdq(onnx, calibration, cache, ...)
                                      the three in a row, cached by everything that decides the
                                      quantized model (zoo.cache entry `quantized/onnxruntime/<key>/`)

The ranges go to the quantizer through quantize_static's own calibration cache (a JSON file of
the TensorsData, written by onnxruntime.quantization.calibrate.save_tensors_data and read back
losslessly with dtypes kept), so the public entry point does the model loading, opset update and
QDQQuantizer call exactly as it does after its own calibration."""
from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from zoo.cache import ensure_entry
from zoo.errors import ZooError, one_line
from zoo.fileutil import file_digest

# Bump when anything below changes the quantized model for the same inputs (types, options, the
# calibration batch size): it is part of the cache key.
QUANT_VERSION = "1"

# Activations uint8, weights int8 (U8S8). The CPU EP's int8 kernels (MLAS) are built around
# x86's u8 x s8 multiply-add: VPDPBUSD with AVX512-VNNI/AVX-VNNI, VPMADDUBSW on plain AVX2, so
# a U8S8 QLinearConv/MatMul feeds them directly, while S8S8 activations need an extra shift to
# uint8 per call. Measured (UNet++ bs 4, 2 threads, EPYC with AVX512-VNNI): U8S8 1.4x the
# images/s of S8S8, with the same output error.
# On AVX2 without VNNI, VPMADDUBSW's int16 saturation can cost accuracy (ORT's docs advise
# reduce_range there); the verify stage's int8 tolerance is the gate that catches it.
ACTIVATION_TYPE = "QUInt8"
WEIGHT_TYPE = "QInt8"
CALIBRATION_BATCH = 1     # samples per calibration run
CHUNK = 4                 # calibration runs whose outputs are held before they are reduced
                          # (the histogram methods keep whole tensors until then; the
                          # calibrator's own max_intermediate_outputs option is not used: in
                          # onnxruntime 1.31 it discards collected outputs without folding
                          # them into the ranges)
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def ort_version() -> str:
    import onnxruntime
    return onnxruntime.__version__


def tool() -> str:
    return f"onnxruntime.quantization {ort_version()}"


def prepare(onnx_path: Path, out_path: Path) -> Path:
    """ONNX Runtime's quantization pre-processing of `onnx_path` written to `out_path`. Symbolic
    shape inference merges conflicting symbolic dims (auto_merge: an exported dynamic batch meets
    Resize/Concat under different names); where it still cannot finish, ONNX's own shape
    inference alone is used (said once on stderr)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    try:
        try:
            quant_pre_process(str(onnx_path), str(out_path), auto_merge=True)
        except Exception as exc:  # noqa: BLE001
            if "symbolic shape inference" not in str(exc):
                raise
            print(f"note: {Path(onnx_path).name}: symbolic shape inference incomplete; quantizing with ONNX shape "
                  f"inference only", file=sys.stderr, flush=True)
            quant_pre_process(str(onnx_path), str(out_path), skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001  any library failure becomes one line naming the file
        raise ZooError(f"{onnx_path}: ONNX Runtime's quantization pre-processing failed ({one_line(exc)[:300]})") from None
    if not Path(out_path).is_file():
        raise ZooError(f"{onnx_path}: ONNX Runtime's quantization pre-processing wrote no model")
    return Path(out_path)


def quantizable_op_types() -> list[str]:
    """The operator types static QDQ quantization handles (what quantize_static calibrates)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def _method(method: str):
    from onnxruntime.quantization import CalibrationMethod
    if method not in METHODS:
        raise ZooError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    return getattr(CalibrationMethod, METHODS[method])


class _Feeds:
    """A CalibrationDataReader over a list of {input name: batch} feeds."""

    def __init__(self, feeds: list[dict]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def calibrate(model_path: Path, feeds_iterable: Iterable[dict], method: str, op_types: list[str] | None = None,
              extra_options: dict | None = None):
    """The activation ranges (onnxruntime.quantization TensorsData) of every tensor to quantize in
    the prepared model `model_path`, from the feeds, by `method` (minmax, entropy, percentile).
    `op_types`: the operators whose tensors are measured (default: what QDQ quantization handles;
    [] every tensor, as TensorRT's calibration table wants); `extra_options`: the calibrator's
    (e.g. symmetric ranges). The calibrator's augmented model lives in a temporary folder."""
    from onnxruntime.quantization import create_calibrator
    cal_method = _method(method)
    with tempfile.TemporaryDirectory(prefix="zoo-calib-") as tmp:
        try:
            calibrator = create_calibrator(Path(model_path), quantizable_op_types() if op_types is None else op_types,
                                           augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                           calibrate_method=cal_method, extra_options=extra_options or {})
        except Exception as exc:  # noqa: BLE001
            raise ZooError(f"{model_path}: ONNX Runtime cannot prepare calibration ({one_line(exc)[:300]})") from None
        runs = 0
        try:
            with contextlib.redirect_stdout(sys.stderr):  # the histogram methods print progress on stdout
                for chunk in _chunks(feeds_iterable, CHUNK):
                    calibrator.collect_data(_Feeds(chunk))
                    runs += len(chunk)
                if runs == 0:
                    raise ZooError(f"{model_path}: calibration got no samples")
                ranges = calibrator.compute_data()
        except ZooError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ZooError(f"{model_path}: calibration failed after {runs} runs ({one_line(exc)[:300]})") from None
        finally:
            del calibrator  # its session holds the augmented model open
    return ranges


def node_names(model_path: Path) -> list[str]:
    """The node names of an ONNX graph, in order (the names --keep-fp32 takes)."""
    import onnx
    return [n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node]


def check_node_names(model_path: Path, names: Iterable[str], what: str = "--keep-fp32") -> None:
    """A one-line ZooError when a name is not a node of the graph (listing a few real names)."""
    real = node_names(model_path)
    known = set(real)
    unknown = [n for n in names if n not in known]
    if unknown:
        sample = ", ".join(n for n in real[:6] if n)
        raise ZooError(f"{what}: {', '.join(unknown[:5])} {'is not a node' if len(unknown) == 1 else 'are not nodes'} "
                       f"of the graph being quantized ({model_path.name}, {len(real)} nodes, e.g. {sample})")


def quantize_with_ranges(model_path: Path, ranges, out_path: Path, per_channel: bool = True,
                         nodes_to_exclude: Iterable[str] = (), nodes_to_quantize: Iterable[str] | None = None) -> Path:
    """Write the QDQ model of the prepared `model_path` to `out_path` from precomputed `ranges`
    (calibrate()'s TensorsData): activations ACTIVATION_TYPE, weights WEIGHT_TYPE (per output
    channel when per_channel). `nodes_to_exclude` stay in fp32; `nodes_to_quantize` (None: all)
    limits quantization to those nodes. No calibration run happens here."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data
    exclude = list(nodes_to_exclude)
    only = None if nodes_to_quantize is None else list(nodes_to_quantize)
    check_node_names(Path(model_path), exclude + (only or []), "quantize: node")
    with tempfile.TemporaryDirectory(prefix="zoo-quant-") as tmp:
        cache = Path(tmp) / "ranges.json"
        save_tensors_data(ranges, cache)
        try:
            quantize_static(str(model_path), str(out_path), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, reduce_range=False,
                            activation_type=getattr(QuantType, ACTIVATION_TYPE),
                            weight_type=getattr(QuantType, WEIGHT_TYPE),
                            nodes_to_quantize=only, nodes_to_exclude=exclude,
                            calibrate_method=ranges.calibration_method, calibration_cache_path=str(cache))
        except Exception as exc:  # noqa: BLE001
            raise ZooError(f"{model_path}: ONNX Runtime's QDQ quantization failed ({one_line(exc)[:300]})") from None
    return Path(out_path)


def quant_key(onnx_path: Path, calibration, per_channel: bool, keep_fp32: Iterable[str]) -> str:
    """The cache key of a quantized model: everything that decides it."""
    parts = [file_digest(onnx_path), calibration.key(), ort_version(), f"per_channel={bool(per_channel)}",
             ",".join(sorted(keep_fp32)), QUANT_VERSION]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


# Operators of a quantized graph: the QDQ boundary pair, and the integer kernels that compute.
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
INTEGER_OPS = ("ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul")


def quantized_op_counts(model_path: Path) -> dict:
    """{op type: count} of the quantized operators in an ONNX graph (QuantizeLinear,
    DequantizeLinear, QLinear*, *Integer*), plus `integer_compute`: how many of them compute in
    integers (QLinear* and *Integer*, not the Q/DQ pairs alone, which compute in fp32)."""
    import onnx
    counts: dict[str, int] = {}
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        if node.op_type in QDQ_OPS or node.op_type in INTEGER_OPS or node.op_type.startswith("QLinear"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    counts["integer_compute"] = sum(v for k, v in counts.items() if k not in QDQ_OPS)
    return counts


INFO = "quantization.json"


def quantize_qdq(onnx_path: Path, calibration, cache: Path, per_channel: bool = True,
                 keep_fp32: Iterable[str] = ()) -> tuple[Path, dict, bool]:
    """prepare -> calibrate (calibration.feeds(CALIBRATION_BATCH)) -> quantize, cached in
    `cache/quantized/onnxruntime/<key>/model.int8.onnx`; returns (path, info for the record,
    cached). A --keep-fp32 name that is not a node of the prepared graph is a one-line error
    before any calibration run."""
    keep = tuple(dict.fromkeys(keep_fp32))
    entry = Path(cache) / "quantized" / "onnxruntime" / quant_key(Path(onnx_path), calibration, per_channel, keep)
    out = entry / "model.int8.onnx"

    def build(tmp: Path) -> None:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="zoo-prep-") as work:
            prepared = prepare(Path(onnx_path), Path(work) / "model.prep.onnx")
            check_node_names(prepared, keep)
            ranges = calibrate(prepared, calibration.feeds(CALIBRATION_BATCH), calibration.method)
            quantize_with_ranges(prepared, ranges, tmp / out.name, per_channel, nodes_to_exclude=keep)
        info = {"tool": tool(), "format": "QDQ", "activation_type": ACTIVATION_TYPE, "weight_type": WEIGHT_TYPE,
                "per_channel": bool(per_channel), "reduce_range": False, "method": calibration.method,
                "calibration_batch_size": CALIBRATION_BATCH, "calibration": calibration.describe(),
                "kept_fp32": list(keep), "quant_version": QUANT_VERSION,
                "seconds": round(time.perf_counter() - t0, 3)}
        (tmp / INFO).write_text(json.dumps(info, indent=1))

    cached = ensure_entry(entry, build)
    info = json.loads((entry / INFO).read_text())
    # where the samples lie is not part of the key: describe the calibration of this run
    return out, {**info, "calibration": calibration.describe(), "artifact": str(out)}, cached
