"""Stage 6, inference: per batch size, the infer-only timing (a resident batch, zoo.pipeline.
infer_only, optionally a per-operator profile) and the whole streaming pipeline over the source
(read -> preprocess -> infer -> postprocess -> metrics), with the model's cost read as achieved
GFLOP/s against this machine's peak at the run's precision (fp32, or the reduced precision's
own: zoo.peaks, measured once per machine and cached)."""
from __future__ import annotations

import time

import numpy as np

from zoo import logs
from zoo.errors import ZooError, one_line
from zoo.peaks import REMEASURE_ENV, apply_peak
from zoo.pipeline import cpu_ceiling, infer_only, run_pipeline
from zoo.runtimes.base import default_threads
from zoo.stages import log
from zoo.stats import shown


def cycled(samples: list, n: int) -> list:
    """n items, cycling when there are fewer."""
    return [samples[i % len(samples)] for i in range(n)]


def infer_feed(mode: str, head: list[np.ndarray], bs: int) -> tuple[np.ndarray, str]:
    """The resident batch of the infer-only timing: real samples, zeros, or seeded random values
    (ais_bench's pure-inference inputs), and its description for the record."""
    if mode == "dataset":
        return np.stack(cycled(head, bs)), "dataset batch (first samples, cycled)"
    shape = (bs, *head[0].shape)
    if mode == "zeros":
        return np.zeros(shape, dtype=np.float32), "zeros"
    if mode == "random":
        return np.random.default_rng(0).standard_normal(shape, dtype=np.float32), "random normal, seed 0"
    raise ZooError(f"--input must be dataset, zeros or random, got {mode!r}")


def timed(description: str, budget_s: float | None, calls: int, measure):
    """measure(tick) under a progress of its timed calls: against the time budget (seconds, the
    ETA is what is left of it; stop-when-stable may end it sooner), else against `calls`."""
    with logs.progress(description, budget_s or calls, "s" if budget_s else "calls") as bar:
        return measure((lambda n, s: bar.update(min(s, budget_s))) if budget_s else (lambda n, s: bar.update(n)))


def op_profile(rt, feeds, bs: int, calls: int, cost: dict) -> dict:
    """The infer-only block's `op_profile`: the runtime's per-operator times (a separate
    profiling session, after the timed calls) with the graph's FLOPs per operator type."""
    from zoo.profile import summarize_ops
    try:
        with logs.progress(f"      bs{bs}: operator profile over {calls} calls"):
            times = rt.op_times(feeds, warmup=1, calls=calls)
    except Exception as exc:  # a profile is extra information: the timed figures stand without it
        log(f"      bs{bs}: operator profile FAILED: {one_line(exc)[:200]}")
        return {"unavailable": f"profiling failed: {one_line(exc)[:300]}"}
    if times is None:
        return {"unavailable": f"{rt.name}: no per-operator profiler in the zoo for this runtime"}
    prof = summarize_ops(times, calls, bs, cost.get("by_op"), rt.profile_op_names)
    top = ", ".join(f"{r['op_type']} {r['share']:.0%}" + (f" ({r['gflops']:.0f} GFLOP/s)" if "gflops" in r else "")
                    for r in prof["ops"][:4])
    log(f"      bs{bs}: operator profile over {calls} calls: {top}")
    return prof


class Peak:
    """This machine's peak at the run's precision on the run's threads (zoo.peaks.machine_peak):
    the best of several kernels and shapes (MatMul and 3x3 Conv through torch and every installed
    runtime), read from the zoo's cache, measured once per machine, threads and library versions
    (ZOO_PEAK_REMEASURE=1 measures it again). The fp32 peak is always in the record; a
    reduced-precision run (bf16, fp16, int8) also has its own precision's peak, and its perf blocks'
    peak_fraction is against that one."""

    def __init__(self, threads: int, enabled: bool, precision: str = "fp32", runtime: str | None = None):
        from zoo.cost import copy_bandwidth
        self.threads, self.info, self.own = threads, None, None
        self.precision, self.runtime = precision, runtime  # the peak is the machine's, whatever the runtime
        if enabled:
            fp32 = self._read("fp32")
            if "gflops" in fp32:
                self.info = fp32
                self.info["memory"] = copy_bandwidth()
                log(f"      memory copy {self.info['memory']['gbytes_per_s']:.1f} GB/s")
            if precision != "fp32":
                self.own = self._read(precision)

    def _read(self, precision: str) -> dict:
        """zoo.peaks.machine_peak of `precision`, logged (cached or measured now, its kernel and
        the ISA bound)."""
        from zoo.peaks import machine_peak, unit
        t0 = time.perf_counter()
        try:
            peak = machine_peak(precision, self.threads, progress=logs.debug)  # a line per kernel with -v
        except ZooError as exc:
            peak = {"precision": precision, "threads": self.threads, "unavailable": str(exc)[:300]}
        took = time.perf_counter() - t0
        bound = (peak.get("isa_bound") or {}).get("gflops")
        how = (f"cached, measured {peak['measured_at']}, read in {took:.2f} s" if peak.get("cached")
               else f"measured in {took:.1f} s, cached") + (
            f"; measured while other processes used {peak['others_cpu_share']:.0%} of these CPUs: may be low"
            if peak.get("busy") else "")
        if "gflops" in peak:
            log(f"      {precision} peak on {self.threads} threads: {peak['gflops']:.0f} {unit(precision)} "
                f"({peak['kernel']}; {how})" + (f"; ISA bound {bound:.0f}" if bound else ""))
        else:
            log(f"      {precision} peak unavailable: {peak['unavailable'][:300]}")
        return peak

    def gflops(self) -> float | None:
        """The peak the run's perf blocks are a fraction of: its own precision's."""
        peak = self.own if self.own is not None else self.info
        return peak.get("gflops") if peak else None

    def device_fields(self) -> dict:
        """The record's device entries: fp32_peak, and precision_peak for a reduced precision."""
        return {**({"fp32_peak": self.info} if self.info else {}),
                **({"precision_peak": self.own} if self.own is not None else {})}


def _with_cost(block: dict, cost: dict, block_peak: float | None, peak: Peak) -> dict:
    flops, act_bytes = cost.get("flops_per_sample"), cost.get("activation_bytes")
    if flops and block.get("status") == "ok":
        block["gflops"] = flops * block["throughput"] / 1e9
        if block_peak:
            block["peak_gflops"] = block_peak  # the peak used; peak_fraction after the sweep
    if act_bytes and block.get("status") == "ok":  # activations written once (a lower bound of traffic)
        block["activation_gbytes_per_s"] = act_bytes * block["throughput"] / 1e9
        if peak.info:
            block["bandwidth_fraction"] = block["activation_gbytes_per_s"] / peak.info["memory"]["gbytes_per_s"]
    return block


def sweep(cfg, rt, manifest, adapter, source, head: list[np.ndarray], batch_sizes: list[int], export: dict,
          writer=None) -> tuple[list[dict], dict, Peak]:
    """(perf blocks, {batch size: its metrics}, the peak). `writer` (zoo.predictions.PredictionWriter)
    keeps the predictions of the first batch size whose pipeline completes (the one whose accuracy
    the record reports)."""
    inp, outp = manifest.input["name"], manifest.output["name"]
    cost = export.get("cost", {})
    peak = Peak(rt.threads, cfg.measure_peak, cfg.precision, rt.name)
    perf, metrics_by_bs = [], {}
    for bs in batch_sizes:
        try:
            feed, desc = infer_feed(cfg.infer_input, head, bs)
            block_peak = peak.gflops()
            block = timed(f"      {cfg.runtime} bs{bs} infer-only", cfg.time_budget, cfg.iterations,
                          lambda tick: infer_only(rt, {inp: feed}, bs, cfg.warmup, cfg.iterations, cfg.time_budget,
                                                  desc, cfg.stability, tick=tick))
        except ZooError:
            raise
        except Exception as exc:  # a batch size the runtime cannot run (memory, shape)
            perf.append({"batch_size": bs, "scope": "infer_only", "status": "failed", "error": one_line(exc)[:500]})
            log(f"      bs{bs}: infer_only FAILED: {one_line(exc)[:200]}")
            continue
        if cfg.profile:
            block["op_profile"] = op_profile(rt, {inp: feed}, bs, cfg.profile, cost)
        perf.append(_with_cost(block, cost, block_peak, peak))
        metrics = adapter.metrics(source)
        keep = writer is not None and not metrics_by_bs
        try:
            pipe = run_pipeline(rt, source, adapter, bs, inp, outp, metrics, workers=cfg.workers, label=cfg.runtime,
                                post_workers=cfg.post_workers, tolerance=cfg.interval_tolerance,
                                on_prediction=writer.add if keep else None)
        except ZooError:
            raise
        except Exception as exc:
            if keep:
                writer.restart()
            perf.append({"batch_size": bs, "scope": "pipeline", "status": "failed", "error": one_line(exc)[:500]})
            continue
        pipe["pipeline_vs_infer"] = pipe["throughput"] / block["throughput"]
        pipe["cpu"]["ceiling"] = cpu_ceiling(pipe, block, default_threads())
        perf.append(_with_cost(pipe, cost, block_peak, peak))
        metrics_by_bs[bs] = metrics
        ceiling = pipe["cpu"]["ceiling"]
        log(f"      bs{bs}: infer {shown(block)} ({block['iterations']} calls, {block['wall_s']:.1f} s), "
            f"pipeline {shown(pipe)} "
             f"({pipe['pipeline_vs_infer']:.0%}" + (f", CPU ceiling {ceiling['vs_infer']:.0%}" if ceiling else "")
             + "), " + ", ".join(f"{m.name} {m.metric}={m.compute()[m.metric]:.4f}" for m in metrics))
    for note in apply_peak(perf, peak.gflops(), peak.precision):  # a fraction of the peak is never above 1
        logs.warning(f"      WARNING: {note}; no fraction recorded ({REMEASURE_ENV}=1 measures the peak again)")
    if not metrics_by_bs:
        raise ZooError(f"{cfg.model}/{cfg.runtime}: every batch size failed; first error: {perf[0].get('error')}")
    return perf, metrics_by_bs, peak
