"""Stage 8, record: one JSON result per run (schema/result.schema.json), validated before it is
written, written once under a new name (`<model>-<runtime>-<precision>[-shardsN]-<time>-<6 hex>.json`, never over
another run's), with the run's kept predictions (if any) in `<run_id>.predictions/` beside it."""
from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone
from pathlib import Path

from zoo import RESULT_SCHEMA_VERSION, schema
from zoo.envinfo import cpu_device, environment
from zoo.fileutil import create_new_bytes, create_unique_json


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def device(rt, peaks: dict | None) -> dict:
    """The device the runtime ran on (the accelerator, with the host CPU in details, or the CPU)
    and the peaks measured on the host's threads (zoo.stages.infer.Peak.device_fields: fp32_peak,
    and precision_peak for a reduced precision)."""
    host = cpu_device(rt.threads)
    dev = rt.device_info() or host
    if dev is not host:
        dev = {**dev, "details": {**dev.get("details", {}), "host": host}}
    return {**dev, **(peaks or {})}


def run_stem(cfg, model: str, t_start: float) -> str:
    """`<model>-<runtime>-<precision>[-shardsN]-<time>`: two records of one model told apart at a glance."""
    return "-".join([model, cfg.runtime, cfg.precision, *([f"shards{cfg.shards}"] if cfg.shards else []),
                     stamp(t_start)])


def reserve_predictions(out_dir: Path, stem: str, attempts: int = 20) -> tuple[str, Path]:
    """A run id `<stem>-<6 hex>` free for both its record and its predictions folder (the
    folder is then created exclusively by zoo.predictions.PredictionWriter)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(attempts):
        run_id = f"{stem}-{secrets.token_hex(3)}"
        if (out_dir / f"{run_id}.json").exists() or (out_dir / f"{run_id}.predictions").exists():
            continue
        return run_id, out_dir / f"{run_id}.predictions"
    raise FileExistsError(f"{out_dir}: no free name for {stem}-* after {attempts} attempts")


def build(cfg, manifest, adapter, rt, peaks, weights, source, export: dict, verify: dict, perf: list,
          accuracy: list, t_start: float, t_end: float, argv: list[str], predictions: dict | None,
          cache: Path, reduced_precision: dict | None = None, sharding: dict | None = None) -> dict:
    """The record; `reduced_precision` (schema 1.7) is zoo.stages.fp32_baseline.fp32_baseline's block,
    `sharding` (schema 1.8) zoo.shard.sharded_sweep's; status ok or invalid (judged)."""
    rec = {
        "schema_version": RESULT_SCHEMA_VERSION, "kind": "zoo.result",
        "run_id": run_stem(cfg, manifest.name, t_start), "status": "ok", "error": None,
        "model": {"name": manifest.name, "title": manifest.title, "task": manifest.task, "variant": adapter.variant,
                  "options": dict(adapter.options), "preprocess": manifest.preprocess, "upstream": manifest.upstream,
                  "guide": manifest.guide},
        "runtime": {"name": rt.name, "version": rt.version(),
                    "settings": {**rt.settings(), "cache": str(cache), "pipeline_workers": cfg.workers,
                                 "postprocess_workers": cfg.post_workers}},
        "device": device(rt, peaks), "precision": rt.executed_precision(),
        "environment": environment(argv),
        "provenance": {"weights": weights.record(), "dataset": source.provenance()},
        "export": export,
        "verify": verify,
        "timestamps": {"started": utc(t_start), "finished": utc(t_end), "duration_s": round(t_end - t_start, 3)},
        "accuracy": accuracy,
        "perf": perf,
    }
    if predictions is not None:
        rec["predictions"] = predictions
    if reduced_precision is not None:
        rec["reduced_precision"] = reduced_precision
    if sharding is not None:
        rec["sharding"] = sharding
    return judged(rec)


def judged(rec: dict) -> dict:
    """Status invalid (schema 1.10), with the one-line reason in `error`, when verify or the
    reduced precision failed: the record is still written (its speed is real), but nothing that
    reads it may present its figures as a sound run's (MLPerf's INVALID, Polygraphy's exit code)."""
    from zoo.checks import invalid_reason
    reason = invalid_reason(rec)
    if reason:
        rec["status"], rec["error"] = "invalid", reason
    return rec


def write(record: dict, out_dir: Path, run_id: str | None = None) -> Path:
    """The validated record as a new file; `run_id` fixed (reserved with its predictions) or chosen."""
    if run_id is None:
        return create_unique_json(out_dir, record, "run_id", schema.validate)
    record["run_id"] = run_id
    path = out_dir / f"{run_id}.json"
    schema.validate(record, str(path))
    create_new_bytes(path, (json.dumps(record, indent=1, allow_nan=False) + "\n").encode())
    return path
