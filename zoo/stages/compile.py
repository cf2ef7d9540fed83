"""Stage 4, compile: the runtime builds its executable model from the exported graph (or takes
the PyTorch module), cached by the ONNX file's hash, and loads it. A calibrated precision (int8)
first opens the calibration set (zoo.quant.calibration_set): the runtime quantizes with it, cached by
the graph's hash and the calibration's key."""
from __future__ import annotations

from pathlib import Path

from zoo import logs
from zoo.runtimes import ModelArtifacts


def keep_fp32_names(text: str | None) -> tuple[str, ...]:
    """--keep-fp32's comma-separated node names."""
    return tuple(n.strip() for n in (text or "").split(",") if n.strip())


def calibration_for(cfg, runtime_cls, manifest, adapter, cache: Path):
    """The run's calibration set when its precision needs one, else None."""
    if not runtime_cls.needs_calibration(cfg.precision):
        return None
    from zoo.quant.calibration_set import open_calibration
    return open_calibration(manifest, adapter, cfg.data, cfg.calib_ids, cfg.calib_size, cfg.calib_method,
                            cfg.calib_seed, cfg.calib_from_eval, cache, cfg.ids_file, cfg.limit)


def compile_runtime(cfg, runtime_cls, manifest, export: dict, module, cache: Path, calibration=None,
                    precision: str | None = None):
    """The loaded runtime (the caller closes it); `precision` overrides the run's (the fp32
    baseline of a reduced-precision run)."""
    precision = precision or cfg.precision
    rt = runtime_cls(cfg.threads, precision)
    arts = ModelArtifacts(onnx_path=Path(export["path"]), input_names=[manifest.input["name"]],
                          output_names=[manifest.output["name"]], torch_module=module, key=export["onnx_sha256"],
                          calibration=calibration if runtime_cls.needs_calibration(precision) else None,
                          keep_fp32=keep_fp32_names(cfg.keep_fp32))
    with logs.progress(f"      compiling for {cfg.runtime}"
                       + (f" ({precision})" if precision != "fp32" else "")):  # a spinner with the time spent
        rt.compile(arts, cache)
        rt.load()
    return rt
