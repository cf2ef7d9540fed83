"""int8 for OpenVINO: post-training quantization of the OpenVINO model with NNCF (the toolkit
OpenVINO's own int8 guide uses), calibrated on the run's calibration samples:

  quantize_ov(core, ov_model, calibration, cache, onnx_sha256, keep_fp32)
      nncf.quantize with NNCF's defaults for a CNN on the CPU (what DEFAULTS describes), the
      model saved as IR in the zoo.cache entry `quantized/openvino/<key>/model.xml`, keyed by
      everything that decides it (graph, calibration, NNCF and OpenVINO versions, kept nodes)
  quantize_ov_with_accuracy_control(core, ov_model, calibration, validation_items, validate_fn)
      nncf.quantize_with_accuracy_control: quantize, then return quantizer groups to floating
      point, most harmful first, until the metric is within max_drop of the fp32 model's (the
      guide's 1%); returns the model and the operations NNCF reverted

The quantized model holds FakeQuantize operations (fp32 in, fp32 out, the int8 grid between);
the CPU plugin fuses them with the convolutions they feed into int8 kernels at compile time, so
which layers really run in int8 is read back from the compiled model (zoo.runtimes.openvino_rt),
never assumed from the FakeQuantize count here.

--keep-fp32 takes ONNX node names. OpenVINO's ONNX reader names each operation after the ONNX
node it came from (its friendly name), and a node it splits into several operations gives them
that name plus a suffix: a Conv with bias becomes `<name>/WithoutBiases` (the Convolution) and an
Add named `<name>`, or named after the graph output when the node produces one. A kept node is
therefore every operation named `<name>` or `<name>/...` (the Convolution, whose inputs NNCF would
quantize; a bias Add named after an output is never quantized). nncf is imported only here, so an
fp32 run never loads it, and with its usage telemetry off (NNCF sends usage events through
openvino-telemetry unless the user opted out; an offline zoo sends nothing)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

from zoo.cache import ensure_entry
from zoo.errors import ZooError, one_line

# Bump when anything below changes the quantized model for the same inputs (NNCF's parameters,
# the calibration batch size, how the model is saved): it is part of the cache key.
QUANT_VERSION = "1"
CALIBRATION_BATCH = 1
TARGET_DEVICE = "CPU"
# What nncf.quantize does with preset=None and model_type=None on a CNN (NNCF 3.x), for the record.
DEFAULTS = {"preset": "performance (NNCF's default for non-transformer models): symmetric int8 weights and "
                      "activations",
            "weights": "int8 symmetric per output channel, range min-max",
            "activations": "int8 per tensor, range: the mean over samples of each sample's min and max",
            "bias_correction": "fast", "target_device": TARGET_DEVICE}
INFO = "quantization.json"
MODEL = "model.xml"


def _nncf():
    """The nncf module, its telemetry off: NNCF_CI, set before nncf is first imported, is the
    switch NNCF reads for that (and for nothing else)."""
    os.environ.setdefault("NNCF_CI", "1")
    import nncf
    return nncf


def nncf_version() -> str:
    return _nncf().__version__


def ov_version() -> str:
    import openvino
    return openvino.__version__.split("-")[0]


def quant_key(onnx_sha256: str, calibration, keep_fp32: Iterable[str]) -> str:
    """The cache key of a quantized model: everything that decides it."""
    parts = [onnx_sha256, calibration.key(), f"nncf {nncf_version()}", f"openvino {ov_version()}",
             ",".join(sorted(keep_fp32)), QUANT_VERSION]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def kept_operations(ov_model, keep_fp32: Iterable[str]) -> list[str]:
    """The OpenVINO operation names (friendly names) of the ONNX nodes `keep_fp32`, as this
    module's docstring explains; a name that matches none is a one-line ZooError listing a few
    real node names."""
    names = [op.get_friendly_name() for op in ov_model.get_ordered_ops()]
    found, unknown = [], []
    for node in keep_fp32:
        hits = [n for n in names if n == node or n.startswith(node + "/")]
        if hits:
            found.extend(hits)
        else:
            unknown.append(node)
    if unknown:
        convs = [op.get_friendly_name().removesuffix("/WithoutBiases") for op in ov_model.get_ordered_ops()
                 if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul")]
        raise ZooError(f"--keep-fp32: {', '.join(unknown[:5])} {'is not a node' if len(unknown) == 1 else 'are not nodes'}"
                       f" of the model being quantized (ONNX node names, e.g. {', '.join(convs[:4])})")
    return list(dict.fromkeys(found))


class _Feeds:
    """The calibration batches as a re-iterable (NNCF passes over its dataset more than once:
    statistics, then bias correction). `bar` (a zoo.logs progress) counts the samples NNCF takes,
    pass by pass."""

    def __init__(self, calibration, batch_size: int, bar=None, description: str = ""):
        self.calibration, self.batch_size, self.bar, self.description = calibration, batch_size, bar, description
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        if self.bar is None:
            return self.calibration.feeds(self.batch_size)
        return self._counted(self.passes)

    def _counted(self, n: int):
        self.bar.update(0, description=self.description + (f", pass {n}" if n > 1 else ""))
        done = 0
        for feed in self.calibration.feeds(self.batch_size):
            yield feed
            done += len(next(iter(feed.values())))
            self.bar.update(done)

    def __len__(self) -> int:
        return -(-len(self.calibration) // self.batch_size)


@contextmanager
def _nncf_shown(calibration, what: str):
    """NNCF's run as a step of the zoo's: a progress of the calibration samples NNCF takes (yielded:
    the feeds to give it), NNCF's own rich progress bars (drawn on stdout, which carries the zoo's
    result path) dropped, and its log lines (also on stdout) made zoo lines (zoo.logs.routed)."""
    from zoo import logs
    _nncf()  # imported first: NNCF makes its logger its own class when it creates it
    description = f"      NNCF {what}"
    with logs.progress(description, len(calibration), "samples") as bar, logs.quiet_rich(), logs.routed("nncf"):
        yield _Feeds(calibration, CALIBRATION_BATCH, bar, description)


def _check_method(calibration) -> None:
    if calibration.method != "minmax":
        raise ZooError(f"openvino: --calib-method {calibration.method} is ONNX Runtime's; NNCF calibrates with its "
                       f"min-max range estimators (--calib-method minmax)")


def fake_quantize_count(ov_model) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in ov_model.get_ordered_ops())


def _quantize_args(calibration, ignored: list[str], feeds: _Feeds | None = None) -> dict:
    nncf = _nncf()
    return {"calibration_dataset": nncf.Dataset(feeds or _Feeds(calibration, CALIBRATION_BATCH)),
            "subset_size": len(calibration), "target_device": nncf.TargetDevice.CPU,
            "ignored_scope": nncf.IgnoredScope(names=ignored) if ignored else None}


def quantize_ov(core, ov_model, calibration, cache: Path, onnx_sha256: str,
                keep_fp32: Iterable[str] = ()) -> tuple[Path, dict, bool]:
    """The int8 IR of `ov_model` (read from the ONNX file whose sha256 is `onnx_sha256`), cached
    in `cache/quantized/openvino/<key>/model.xml`; returns (its path, info for the record,
    cached). A --keep-fp32 name that is no node is a one-line error before any calibration run."""
    import openvino as ov
    _check_method(calibration)
    keep = tuple(dict.fromkeys(keep_fp32))
    ignored = kept_operations(ov_model, keep)
    entry = Path(cache) / "quantized" / "openvino" / quant_key(onnx_sha256, calibration, keep)

    def build(tmp: Path) -> None:
        nncf = _nncf()
        t0 = time.perf_counter()
        try:
            with _nncf_shown(calibration, "int8 calibration") as feeds:
                quantized = nncf.quantize(ov_model.clone(), **_quantize_args(calibration, ignored, feeds))
        except ZooError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ZooError(f"openvino: NNCF's quantization failed ({one_line(exc)[:300]})") from None
        ov.save_model(quantized, str(tmp / MODEL), compress_to_fp16=False)  # fp32 constants stay fp32
        info = {"tool": f"nncf {nncf.__version__}", "method": {"algorithm": "nncf.quantize (min-max post-training "
                                                                            "quantization)", **DEFAULTS},
                "calibration_batch_size": CALIBRATION_BATCH, "subset_size": len(calibration),
                "kept_fp32": list(keep), "ignored_scope": ignored, "fake_quantize_nodes": fake_quantize_count(quantized),
                "quant_version": QUANT_VERSION, "seconds": round(time.perf_counter() - t0, 3)}
        (tmp / INFO).write_text(json.dumps(info, indent=1))

    def verify(folder: Path) -> None:
        try:
            core.read_model(str(folder / MODEL))
        except Exception as exc:  # noqa: BLE001
            raise ZooError(f"{folder / MODEL}: OpenVINO cannot read it ({one_line(exc)[:200]})") from None

    cached = ensure_entry(entry, build, verify)
    info = json.loads((entry / INFO).read_text())
    # where the samples lie is not part of the key: describe the calibration of this run
    return entry / MODEL, {**info, "calibration": calibration.describe(), "artifact": str(entry / MODEL)}, cached


# NNCF's accuracy-control report is logged, not returned: "N out of M were reverted back to the
# floating-point precision:" then one tab-indented operation name per line.
_REVERTED = re.compile(r"(\d+) out of (\d+) .*reverted back to the floating-point precision:\s*\n(.*)", re.S)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _nncf_log():
    """NNCF's log messages (its 'nncf' logger) during the block."""
    handler = _Capture()
    logger = logging.getLogger("nncf")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def reverted_operations(messages: list[str]) -> list[str]:
    """The operations NNCF's accuracy control reverted to floating point, from its report."""
    for msg in messages:
        m = _REVERTED.search(msg)
        if m:
            return [line.strip() for line in m.group(3).splitlines() if line.strip()]
    return []


def quantize_ov_with_accuracy_control(core, ov_model, calibration, validation_items: list,
                                      validate_fn: Callable[[object, list], float], max_drop: float = 0.01,
                                      drop_type: str = "relative", keep_fp32: Iterable[str] = ()):
    """nncf.quantize_with_accuracy_control on `ov_model`: quantized as quantize_ov does, then
    quantizer groups returned to floating point until validate_fn's metric (higher is better)
    drops at most `max_drop` (relative: a fraction of the fp32 metric; absolute: in the metric's
    units) below the fp32 model's. Each validation item is a (feeds dict, target) pair; NNCF infers
    the feeds and validate_fn(compiled model, items) scores a model on the items it is given.
    Returns (the quantized ov.Model, the OpenVINO operations NNCF reverted to floating point,
    info: the metric's drop and NNCF's own words)."""
    nncf = _nncf()
    _check_method(calibration)
    if drop_type not in ("relative", "absolute"):
        raise ZooError(f"accuracy control: drop_type must be relative or absolute, got {drop_type!r}")
    ignored = kept_operations(ov_model, tuple(dict.fromkeys(keep_fp32)))
    validation = nncf.Dataset(validation_items, lambda item: item[0])
    t0 = time.perf_counter()
    with _nncf_shown(calibration, "int8 calibration with accuracy control") as feeds, _nncf_log() as messages:
        try:
            quantized = nncf.quantize_with_accuracy_control(
                ov_model.clone(), validation_dataset=validation, validation_fn=validate_fn, max_drop=max_drop,
                drop_type=nncf.DropType.RELATIVE if drop_type == "relative" else nncf.DropType.ABSOLUTE,
                **_quantize_args(calibration, ignored, feeds))
        except Exception as exc:  # noqa: BLE001
            raise ZooError(f"openvino: NNCF's quantization with accuracy control failed ({one_line(exc)[:300]})") from None
    reverted = reverted_operations(messages)
    info = {"tool": f"nncf {nncf.__version__}", "max_drop": max_drop, "drop_type": drop_type,
            "reverted_operations": reverted, "fake_quantize_nodes": fake_quantize_count(quantized),
            "nncf_report": [m for m in messages if "ccuracy" in m or "evert" in m][:20],
            "seconds": round(time.perf_counter() - t0, 3)}
    return quantized, reverted, info
