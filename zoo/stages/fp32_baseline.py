"""Stage 6b, the fp32 baseline of a reduced-precision run (--precision bf16, fp16, int8): the same
runtime compiled at fp32 and run over the same source at the batch size whose accuracy the record
reports, in the same process and on the same machine state, so that the record shows

  - the fp32 accuracy (the adapter's own metrics) and each protocol's delta to it, judged by the
    guides' 1% rule (relative drop <= manifest reference.tolerance);
  - the fidelity of the reduced-precision predictions to fp32's (zoo.metrics.fidelity): the only
    meaningful criterion when the checkpoint is not a trained one (random weights: the accuracy
    figures mean nothing, whether the arithmetic changes the decisions still does);
  - the fp32 infer-only throughput measured like the sweep's, hence the speed-up over fp32.

The reduced-precision predictions are compared sample by sample while the fp32 pass runs: the
sweep keeps the first batch size's predictions with zoo.predictions.PredictionWriter (the run's
own --save-predictions folder, else a temporary folder removed whatever happens), and the fp32
pass reads them back one at a time in id order. Memory stays bounded (a 1024x2048 Cityscapes map
is one PNG on disk, never a list in memory)."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from zoo import logs
from zoo.errors import ZooError
from zoo.ids import shown
from zoo.metrics.fidelity import Fidelity
from zoo.pipeline import interleaved, run_pipeline
from zoo.predictions import PredictionWriter, read_predictions
from zoo.stages import log
from zoo.stages.compile import compile_runtime
from zoo.stages.infer import infer_feed

ACCURACY_DELTA, FIDELITY = "accuracy_delta", "fidelity_to_fp32"


class TemporaryPredictions(PredictionWriter):
    """A PredictionWriter in a new temporary folder, removed (folder and parent) by discard()."""

    def __init__(self):
        self.parent = Path(tempfile.mkdtemp(prefix="zoo-fp32-baseline-"))
        super().__init__(self.parent / "predictions")

    def discard(self) -> None:
        shutil.rmtree(self.parent, ignore_errors=True)


def trained_weights(weights) -> bool:
    """Whether the checkpoint is a trained one with a meaning for accuracy: a manifest checkpoint
    (provenance.weights.checkpoint: official, or the project's trained built-in file). Any other
    file (benchmarks/random_weights.py's random-weight checkpoints) has no such claim."""
    return weights.checkpoint is not None


def _pairwise(folder: Path, source, fidelity: Fidelity):
    """on_prediction for the fp32 pass: the kept prediction of the same sample, then the update."""
    ids, items = read_predictions(folder)
    if ids != source.ids:
        raise ZooError(f"{shown(folder)}: the kept predictions ({len(ids)} ids) are not the source's "
                       f"({len(source.ids)}): no fidelity without the same samples")

    def compare(sample_id: str, fp32_prediction) -> None:
        kept_id, candidate = next(items)
        if kept_id != sample_id:
            raise ZooError(f"{shown(folder)}: kept prediction {kept_id} met fp32 sample {sample_id} (order differs)")
        fidelity.update(candidate, fp32_prediction)
    return compare


def _delta(accuracy: list[dict], fp32: list[dict], tolerance: float) -> list[dict]:
    """Per protocol: the reduced-precision value, fp32's, their difference and the relative drop."""
    by_name = {a["name"]: a for a in fp32}
    out = []
    for a in accuracy:
        ref = by_name[a["name"]]["value"]
        drop = (ref - a["value"]) / abs(ref) if ref else None
        out.append({"name": a["name"], "metric": a["metric"], "value": a["value"], "fp32": ref,
                    "delta": a["value"] - ref, "relative_drop": drop,
                    "passed": bool(drop <= tolerance) if drop is not None else bool(a["value"] >= ref)})
    return out


def fp32_baseline(cfg, runtime_cls, manifest, adapter, source, head: list, export: dict, module, cache: Path,
                  weights, calibration, rt, perf: list[dict], accuracy: list[dict], kept_folder: Path) -> dict:
    """The record's `reduced_precision` block (schema 1.7). `accuracy` is the run's accuracy
    blocks (first batch size), `kept_folder` the predictions PredictionWriter kept of that batch
    size, `rt` the reduced-precision runtime (its executed precision)."""
    t0 = time.perf_counter()
    bs = accuracy[0]["batch_size"] if accuracy else next(p["batch_size"] for p in perf if p["status"] == "ok")
    inp, outp = manifest.input["name"], manifest.output["name"]
    scoring = manifest.adapter(**adapter.export_options())  # no run-only outputs (drawings, results files)
    rt32 = compile_runtime(cfg, runtime_cls, manifest, export, module, cache, precision="fp32")
    try:
        feed, _ = infer_feed(cfg.infer_input, head, bs)
        settings = cfg.timing
        with logs.progress(f"      fp32 bs{bs}: speed-up of {rt.executed_precision()} over fp32, interleaved windows",
                           cfg.time_budget, "s") as bar:
            ab = interleaved(rt32, {inp: feed}, rt, {inp: feed}, bs, cfg.warmup, settings, cfg.time_budget,
                             max_rounds=max(cfg.iterations // max(settings.window, 1), 1),
                             tick=lambda rounds, s: bar.update(min(s, cfg.time_budget)))
        metrics, fidelity = scoring.metrics(source), Fidelity()
        pipe = run_pipeline(rt32, source, scoring, bs, inp, outp, metrics, workers=cfg.workers,
                            label=f"{cfg.runtime} fp32", post_workers=cfg.post_workers, tolerance=cfg.interval_tolerance,
                            on_prediction=_pairwise(kept_folder, source, fidelity))
        runtime = f"{rt32.name} {rt32.version()} ({rt32.executed_precision()})"
    finally:
        rt32.close()
    fp32_acc = [{"name": m.name, "metric": m.metric, "value": float(m.compute()[m.metric])} for m in metrics]
    tolerance = float(manifest.reference["tolerance"])
    delta = _delta(accuracy, fp32_acc, tolerance)
    fid = fidelity.report()
    trained = trained_weights(weights)
    passed = all(d["passed"] for d in delta) if trained else fid["value"] >= 1 - tolerance
    seconds = time.perf_counter() - t0
    fp32_tp = ab["a"]["throughput"]
    log(f"      fp32 bs{bs}: infer {fp32_tp:.1f}/s; {rt.executed_precision()} x{ab['ratio']:.2f} "
        + (f"[{ab['low']:.2f}, {ab['high']:.2f}]" if ab["low"] is not None else "(no interval)")
        + ("" if ab["stable"] else f" UNSTABLE ({ab['reason']})") + ", " + ", ".join(
        f"{d['name']} {d['metric']} {d['value']:.4f} vs fp32 {d['fp32']:.4f}" for d in delta)
        + f"; {fid['metric']}={fid['value']:.4f}; {ACCURACY_DELTA if trained else FIDELITY} passed={passed} "
        f"({seconds:.1f} s)")
    return {"requested": cfg.precision, "executed": rt.executed_precision(),
            "calibration": calibration.describe() if calibration is not None else None,
            "fp32_baseline": {"runtime": runtime, "batch_size": bs, "throughput_samples_per_s": fp32_tp,
                              "infer_only": {"iterations": ab["rounds"] * ab["a"]["window_calls"], "stopped_by": ab["stopped_by"],
                                             "latency_ms_mean": 1000.0 * bs / fp32_tp},
                              "pipeline_throughput_samples_per_s": pipe["throughput"],
                              "speedup": ab["ratio"],
                              "speedup_interval": {k: ab[k] for k in ("low", "high", "half_width", "rounds", "stable",
                                                                      "method", "reason")},
                              "seconds": seconds, "accuracy": fp32_acc},
            "delta": delta, "fidelity": [fid], "tolerance": tolerance,
            "criterion": ACCURACY_DELTA if trained else FIDELITY, "trained_weights": trained, "passed": bool(passed)}
