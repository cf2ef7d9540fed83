"""One run of one model on one runtime, as the sequence of its stages (zoo/stages/):

  config -> weights -> dataset -> export (+ parity) -> compile -> verify -> inference
  (-> the fp32 baseline of a reduced precision: zoo/stages/fp32_baseline.py) -> score -> record

checkpoint -> ONNX -> compiled model -> the runtime checked against PyTorch on a real batch ->
batched inference with statistics over the dataset -> accuracy -> one validated result JSON."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from zoo.cache import publish_dir, temp_dir_beside
from zoo.datasets import open_source
from zoo.errors import ZooError
from zoo.manifest import load_manifest
from zoo.paths import cache_dir
from zoo.pipeline import check_finite
from zoo.stages import log, record
from zoo.stages.compile import calibration_for, compile_runtime
from zoo.stages.config import RunConfig, check_config, sweep_sizes
from zoo.stages.export import check_edit_allowed, export_model, torch_outputs, verify_reference
from zoo.stages.fp32_baseline import TemporaryPredictions, fp32_baseline
from zoo.stages.infer import cycled, sweep
from zoo.stages.score import accuracy_blocks
from zoo.stages.verify import verify_runtime
from zoo.stages.weights import load_model

__all__ = ["RunConfig", "check_config", "run", "write_bins"]


def run(cfg: RunConfig, argv: list[str] | None = None) -> Path:
    manifest, runtime_cls, adapter = check_config(cfg)
    if cfg.isolate:
        from zoo.isolate import run_isolated
        return run_isolated(cfg, argv or [])
    t_start = time.time()
    batch_sizes = sweep_sizes(cfg, manifest, adapter)
    cache = cache_dir()
    check_edit_allowed(adapter, runtime_cls, cfg, manifest)

    log(f"[1/7] weights ({cfg.weights or manifest.weights.get('default')})")
    weights, module = load_model(cfg, manifest, adapter)

    log("[2/7] dataset")
    source = open_source(manifest, cfg.data, cfg.ids_file, cfg.limit, cache)
    adapter.check_source(source)
    if cfg.shards:  # more shards than samples: refused now, not after the export
        from zoo.shard import check_count
        check_count(cfg, source)
    vbs = manifest.verify["batch_size"]
    head_ids = source.ids[:max(batch_sizes + [vbs])]  # the first samples: infer-only feeds, verify batch
    loaded = [adapter.preprocess(source.read(i)) for i in head_ids]
    head = [x for x, _ in loaded]
    batch, metas = np.stack(cycled(head, vbs)), cycled([m for _, m in loaded], vbs)
    reference = torch_outputs(module, batch)
    check_finite(reference, f"{weights.path}: the PyTorch model's outputs on the first batch", cycled(head_ids, vbs))

    log("[3/7] export ONNX")
    export = export_model(cfg, manifest, adapter, module, weights, batch, metas, reference, cache)

    calibration = calibration_for(cfg, runtime_cls, manifest, adapter, cache)
    if calibration is not None:
        log(f"      calibration: {len(calibration)} samples of {calibration.describe()['split']}, {cfg.calib_method}")
    log(f"[4/7] compile for {cfg.runtime}" + (f" ({cfg.precision})" if cfg.precision != "fp32" else ""))
    rt = compile_runtime(cfg, runtime_cls, manifest, export, module, cache, calibration)
    writer = keeper = None
    try:
        log(f"[5/7] verify {cfg.runtime} against "
            f"{'the edited graph (ONNX Runtime)' if export.get('edit') else 'PyTorch'} on {vbs} real samples")
        inp, outp = manifest.input["name"], manifest.output["name"]
        expected, label = verify_reference(export, reference, batch, manifest)
        verified = verify_runtime(rt, expected, batch, adapter, metas, manifest, inp, outp, cfg.precision, label)
        log(f"      max_rel_diff={verified['max_rel_diff']:.2e}, decision flips {verified['decision_flips']}, "
             f"passed={verified['passed']}")
        if not verified["passed"]:  # the run goes on (its speed is real); its record will say invalid
            from zoo.checks import verify_reason
            log(f"      {verify_reason(verified)}: the record will say status invalid")
        run_id = None
        out_dir = Path(cfg.out) / manifest.name
        if cfg.save_predictions:
            from zoo.predictions import PredictionWriter
            run_id, folder = record.reserve_predictions(out_dir, record.run_stem(cfg, manifest.name, t_start))
            writer = PredictionWriter(folder)

        baseline = cfg.precision != "fp32" and cfg.fp32_baseline
        if baseline and writer is None:
            keeper = TemporaryPredictions()  # for the fp32 baseline's comparison; removed in `finally`

        log(f"[6/7] inference, batch sizes {batch_sizes}, {len(source)} samples"
            + (f", {cfg.shards} shards" if cfg.shards else ""))
        sharding = None
        if cfg.shards:  # Ray is imported by this path only
            from zoo.shard import sharded_sweep
            from zoo.stages.infer import Peak
            perf, metrics_by_bs, sharding = sharded_sweep(cfg, runtime_cls, manifest, adapter, source, export,
                                                          batch_sizes)
            peak = Peak(rt.threads, False)
        else:
            perf, metrics_by_bs, peak = sweep(cfg, rt, manifest, adapter, source, head, batch_sizes, export,
                                              keeper or writer)
        closed = (keeper or writer).close() if (keeper or writer) is not None else None
        accuracy = accuracy_blocks(metrics_by_bs, manifest, source)
        reduced = None
        if baseline:
            log(f"      fp32 baseline: {cfg.runtime} at fp32 over the same samples (accuracy, fidelity, speed)")
            reduced = fp32_baseline(cfg, runtime_cls, manifest, adapter, source, head, export, module, cache, weights,
                                    calibration, rt, perf, accuracy, Path(closed["path"]))

        log("[7/7] score and record")
        kept = None
        if writer is not None:
            kept = closed
            kept["path"] = Path(kept["path"]).name  # beside the record
        rec = record.build(cfg, manifest, adapter, rt, peak.device_fields(), weights, source, export, verified, perf,
                           accuracy, t_start, time.time(), argv or [], kept, cache, reduced, sharding)
        path = record.write(rec, out_dir, run_id)
        writer = None  # kept: the record names it
        return path
    finally:
        rt.close()
        if writer is not None:
            writer.discard()  # no record, no predictions
        if keeper is not None:
            keeper.discard()


def write_bins(model: str, data: Path | None, ids_file: Path | None, limit: int | None, options: dict,
               bin_dir: Path) -> Path:
    """Preprocess every sample and write `<id>.bin` (raw float32, CHW) into bin_dir, plus
    `inputs.json` (ids in order, shape, dtype). All or nothing: written to a temporary folder
    that is renamed at the end."""
    bin_dir = Path(bin_dir)
    if bin_dir.exists():
        raise ZooError(f"{bin_dir}: already exists (refusing to mix with other files)")
    manifest = load_manifest(model)
    adapter = manifest.adapter(**options)
    source = open_source(manifest, data, ids_file, limit, cache_dir())
    adapter.check_source(source)
    tmp = temp_dir_beside(bin_dir)  # unique: concurrent preps never share (or delete) a temporary folder
    try:
        shape = None
        for sid in source.ids:
            x, _ = adapter.preprocess(source.read(sid))
            x = np.ascontiguousarray(x, dtype=np.float32)
            shape = list(x.shape)
            x.tofile(tmp / f"{sid}.bin")
        (tmp / "inputs.json").write_text(json.dumps({"model": model, "input": manifest.input["name"],
                                                     "shape": shape, "dtype": "float32", "layout": "CHW",
                                                     "ids": source.ids}, indent=1))
        publish_dir(tmp, bin_dir)  # fails (nothing mixed) if another prep published bin_dir meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return bin_dir
