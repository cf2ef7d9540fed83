"""Stage 6, inference: per batch size, the infer-only timing (a resident batch, zoo.pipeline.
infer_only, optionally a per-operator profile) and the whole streaming pipeline over the source
(read -> preprocess -> infer -> postprocess -> metrics), with the model's cost read as achieved
GFLOP/s against this machine's GEMM peak at the run's precision (fp32, or the reduced precision's
own, zoo.peaks) measured before each batch size."""
from __future__ import annotations


import numpy as np

from zoo.errors import ZooError, one_line
from zoo.pipeline import cpu_ceiling, infer_only, run_pipeline
from zoo.runtimes.base import default_threads
from zoo.stages import log


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


def op_profile(rt, feeds, bs: int, calls: int, cost: dict) -> dict:
    """The infer-only block's `op_profile`: the runtime's per-operator times (a separate
    profiling session, after the timed calls) with the graph's FLOPs per operator type."""
    from zoo.profile import summarize_ops
    try:
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
    """This machine's fp32 GEMM rate on the runtime's threads (the best of torch.mm and the
    runtime's own fp32 MatMul, zoo.peaks.fp32_peak): measured before the sweep and again
    before each batch size (a shared machine drifts within a run); fractions use the highest.
    A reduced-precision run (bf16, fp16, int8) also measures its own precision's GEMM peak through
    its runtime's kernels (zoo.peaks): that one is measured again before each batch size instead,
    and its perf blocks' peak_fraction is against it (the fp32 peak stays in the record, once)."""

    def __init__(self, threads: int, enabled: bool, precision: str = "fp32", runtime: str | None = None):
        from zoo.cost import copy_bandwidth
        from zoo.peaks import fp32_peak
        self.threads, self.info, self.own = threads, None, None
        self.precision, self.runtime = precision, runtime
        if enabled:
            self.info = fp32_peak(threads, runtime)
            self.info["measurements"] = [self.info["gflops"]]
            self.info["method"] += ("; measured again (best of 10) before each batch size, gflops = the highest"
                                    if precision == "fp32" else f"; measured once (a {precision} run measures "
                                    "its own precision's peak again before each batch size: precision_peak)")
            self.info["memory"] = copy_bandwidth()
            log(f"      fp32 GEMM peak on {threads} threads: {self.info['gflops']:.0f} GFLOP/s ({self.info['kernel']}); "
                 f"memory copy {self.info['memory']['gbytes_per_s']:.1f} GB/s")
            if precision != "fp32":
                self.own = self._own(repeats=25)
                if "gflops" in self.own:
                    self.own["measurements"] = [self.own["gflops"]]
                    self.own["method"] += "; measured again (best of 10) before each batch size, gflops = the highest"
                    log(f"      {precision} GEMM peak on {threads} threads: {self.own['gflops']:.0f} "
                         f"{'GOP' if precision == 'int8' else 'GFLOP'}/s ({self.own['kernel']})")
                else:
                    log(f"      {precision} GEMM peak unavailable: {self.own['unavailable']}")

    def _own(self, repeats: int) -> dict:
        """The run's precision's peak (zoo.peaks.precision_peak), or {'precision', 'unavailable': why}."""
        from zoo.peaks import precision_peak
        try:
            return precision_peak(self.precision, self.threads, self.runtime, repeats=repeats)
        except ZooError as exc:
            return {"precision": self.precision, "unavailable": str(exc)[:300]}

    def again(self) -> float | None:
        """The run's precision's peak measured now (and kept), None when not measured."""
        if not self.info:
            return None
        if self.own is not None:
            if "gflops" not in self.own:
                return None
            g = self._own(repeats=10).get("gflops")
            if g is not None:
                self.own["measurements"].append(g)
                self.own["gflops"] = max(self.own["measurements"])
            return g
        from zoo.peaks import fp32_peak
        g = fp32_peak(self.threads, self.runtime, repeats=10)["gflops"]
        self.info["measurements"].append(g)
        self.info["gflops"] = max(self.info["measurements"])
        return g

    def gflops(self) -> float | None:
        """The peak the run's perf blocks are a fraction of: its own precision's (the highest)."""
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
            block["peak_gflops"] = block_peak  # peak_fraction: after the sweep, vs the run's highest
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
            block_peak = peak.again()
            block = infer_only(rt, {inp: feed}, bs, cfg.warmup, cfg.iterations, cfg.time_budget, desc, cfg.stability)
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
                                post_workers=cfg.post_workers,
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
        log(f"      bs{bs}: infer {block['throughput']:.1f}/s, pipeline {pipe['throughput']:.1f}/s "
             f"({pipe['pipeline_vs_infer']:.0%}" + (f", CPU ceiling {ceiling['vs_infer']:.0%}" if ceiling else "")
             + "), " + ", ".join(f"{m.name} {m.metric}={m.compute()[m.metric]:.4f}" for m in metrics))
    for block in perf:
        if block.get("gflops") is not None:
            block["peak_fraction"] = block["gflops"] / peak.gflops() if peak.gflops() else None
    if not metrics_by_bs:
        raise ZooError(f"{cfg.model}/{cfg.runtime}: every batch size failed; first error: {perf[0].get('error')}")
    return perf, metrics_by_bs, peak
