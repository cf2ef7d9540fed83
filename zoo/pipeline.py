"""The measuring harness: pure-inference timing and the streaming dataset pipeline.

Timing is here, not in runtimes: `time.perf_counter_ns()` around synchronous calls, warm-up
separate, every sample kept."""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from zoo import logs as zoo_logs
from zoo.errors import ZooError
from zoo.stats import MIN_WINDOWS, interval, per_sample, relative_half_width, summarize, throughput


def _now() -> int:
    return time.perf_counter_ns()


def _ms(ns: int) -> float:
    return ns / 1e6


def _cpu() -> int:
    """CPU time of the whole process (every thread, the runtime's own pools included), ns."""
    return time.process_time_ns()


def _thread_cpu() -> int:
    """CPU time of the calling thread, ns."""
    return time.thread_time_ns()


@dataclass(frozen=True)
class Stability:
    """Stop-when-stable (LoadGen's minimum duration, perf_analyzer's windows): timed calls are
    grouped in windows of `window` calls (0: automatic, about `window_s` seconds of calls and at
    least one, from the time of a call before the first window); the measurement may stop once it has at least `windows`
    complete windows, `min_calls` timed calls and `min_duration_s` of timed calls (LoadGen's
    minimum query count and duration), and the 95% interval of its throughput
    (zoo.stats.interval, over the windows) is within `tolerance` (relative half-width)."""
    window: int = 0
    windows: int = MIN_WINDOWS
    tolerance: float = 0.02
    min_duration_s: float = 1.0
    min_calls: int = 0
    window_s: float = 0.25

    def __post_init__(self):
        if self.window < 0 or self.window_s <= 0 or self.windows < MIN_WINDOWS or not 0 < self.tolerance < 1 \
                or self.min_duration_s < 0 or self.min_calls < 0:
            raise ValueError(f"invalid stability settings {self}")

    def check(self, window_ms: list[float], elapsed_s: float, calls: int | None = None) -> bool:
        """Whether windows of these mean latencies (ms per call), `elapsed_s` and `calls` (default:
        the windows' calls) of timed calls in, may stop."""
        calls = len(window_ms) * max(self.window, 1) if calls is None else calls
        if len(window_ms) < self.windows or elapsed_s < self.min_duration_s or calls < self.min_calls:
            return False
        half = relative_half_width(window_ms)
        return half is not None and half <= self.tolerance

    def calls_per_window(self, call_s: float | None) -> int:
        """`window`, or (automatic) about `window_s` seconds of calls that take `call_s` each, at least 1."""
        if self.window:
            return self.window
        return max(1, round(self.window_s / call_s)) if call_s and call_s > 0 else 1


def infer_only(runtime, feeds: dict[str, np.ndarray], batch_size: int, warmup: int, iterations: int,
               time_budget_s: float | None, input_desc: str, stability: Stability | None = None,
               clock=_now, cpu_clock=_cpu, keep_latencies: bool = False, tick=None) -> dict:
    """Time runtime.infer on a resident batch: `warmup` untimed calls, then timed calls until the
    first of: `stability` reached (stopped_by "stable"), `iterations` calls, `time_budget_s` of
    timed calls (at least one call). `clock()` returns nanoseconds (injectable for tests).
    The block's `interval` is the 95% interval of its throughput over windows of
    `stability.window` calls, or of about `stability.window_s` seconds when it is 0 (sized from the
    last warm-up call, or the first timed one) (zoo.stats.interval; without `stability`, automatic
    windows and a 2% tolerance): a measurement that stopped before its interval got within the tolerance is
    unstable, and its `interval.reason` says what stopped it.
    `cpu_s_per_sample` is the process CPU time of the timed calls per sample: the cores' worth of
    work the runtime takes for one sample (idle pool threads that spin count as work).
    `keep_latencies`: the block also holds every timed call's latency (`latencies_ms`, not a record
    field: a sharded run pools its shards' calls into one distribution, zoo.shard).
    `tick(calls, seconds)`, if given, is told after each timed call (outside the timed span): the
    timed calls so far and their seconds (a progress bar's)."""
    last_warm = None
    for _ in range(warmup):
        t0 = clock()
        runtime.infer(feeds)
        last_warm = (clock() - t0) / 1e9
    settings = stability or Stability()
    window = settings.calls_per_window(last_warm) if last_warm else None
    lat: list[float] = []
    means: list[float] = []
    copies: dict[str, list[float]] = {}
    t_start = clock()
    cpu_start = cpu_clock()
    stopped_by = "iterations"
    while len(lat) < iterations:
        t0 = clock()
        runtime.infer(feeds)
        lat.append((clock() - t0) / 1e6)
        timing = getattr(runtime, "last_timing", None)  # runtimes with device copies (IO binding)
        if timing:
            for k, v in timing.items():
                copies.setdefault(k, []).append(v)
        if window is None:  # no warm-up call: the first timed call sizes the windows
            window = settings.calls_per_window(lat[0] / 1e3)
        if len(lat) % window == 0:
            means.append(sum(lat[-window:]) / window)
            if stability is not None and stability.check(means, (clock() - t_start) / 1e9, len(lat)):
                stopped_by = "stable"
                break
        if time_budget_s is not None and (clock() - t_start) / 1e9 >= time_budget_s and len(lat) < iterations:
            stopped_by = "time_budget"
            break
        if tick is not None:
            tick(len(lat), (clock() - t_start) / 1e9)
    cpu_ns = cpu_clock() - cpu_start
    stats = summarize(lat)
    tp = throughput(batch_size, stats["mean"])
    block = {"batch_size": batch_size, "scope": "infer_only", "status": "ok", "error": None,
             "input": input_desc, "warmup": warmup, "iterations": len(lat), "stopped_by": stopped_by,
             "num_samples": len(lat) * batch_size, "wall_s": (clock() - t_start) / 1e9,
             "throughput": tp, "latency_ms": stats, "latency_per_sample_ms": per_sample(stats, batch_size),
             "cpu_s_per_sample": cpu_ns / 1e9 / (len(lat) * batch_size)}
    stop = {"iterations": f"stopped at --iters {iterations}",
            "time_budget": f"stopped by the time budget ({time_budget_s:g} s)" if time_budget_s else None}.get(stopped_by)
    if stability is None:
        stop = "stop-when-stable off"
    block["interval"] = interval([(window * batch_size, m * window / 1e3) for m in means], tp,
                                 settings.tolerance, window, reason=stop)
    if keep_latencies:
        block["latencies_ms"] = lat
    for k, vals in copies.items():  # h2d_ms / compute_ms / d2h_ms -> h2d_latency_ms, ...
        block[k.replace("_ms", "_latency_ms")] = summarize(vals)
    return block


@dataclass
class StageClock:
    ns: dict = field(default_factory=lambda: {"read": 0, "preprocess": 0, "infer": 0, "postprocess": 0})
    cpu_ns: dict = field(default_factory=lambda: {"read": 0, "preprocess": 0, "postprocess": 0})
    per_batch: dict = field(default_factory=lambda: {"infer": [], "postprocess": []})


def _load(source, adapter, sample_id):
    """(x, meta, target, read wall, preprocess wall, read CPU, preprocess CPU), times in ns."""
    c0, t0 = _thread_cpu(), _now()
    sample = source.read(sample_id)
    c1, t1 = _thread_cpu(), _now()
    x, meta = adapter.preprocess(sample)
    target = adapter.target(sample)
    return x, meta, target, t1 - t0, _now() - t1, c1 - c0, _thread_cpu() - c1


def check_finite(out: np.ndarray, what: str, sample_ids: list[str] | None = None) -> None:
    """A ZooError naming the first sample whose output holds NaN or infinity (NaN weights, an
    overflowing runtime): such outputs must fail the run, never become an accuracy or a bare NaN
    in the record. Two reductions over the batch (max/min propagate NaN and show inf), no copy;
    per-sample work only on a failure."""
    out = np.asarray(out)
    if out.dtype.kind not in "fc" or out.size == 0:
        return
    if np.isfinite(out.max()) and np.isfinite(out.min()):
        return
    bad = ~np.isfinite(out.reshape(len(out), -1)).all(axis=1) if out.ndim else np.array([True])
    i = int(np.flatnonzero(bad)[0])
    name = f" ({sample_ids[i]})" if sample_ids is not None and i < len(sample_ids) else ""
    raise ZooError(f"{what}: non-finite values (NaN or infinity) in sample {i}{name} of the batch: the weights or "
                   f"the runtime produce invalid outputs; no result written")


def run_pipeline(runtime, source, adapter, batch_size: int, input_name: str, output_name: str, metrics: list,
                 workers: int = 1, on_prediction=None, label: str = "", post_workers: int = 1,
                 progress=None, keep_latencies: bool = False, tolerance: float = 0.02) -> dict:
    """Stream the source through read (source.read) -> preprocess (adapter.preprocess and
    adapter.target, in `workers` threads, prefetching) -> batch -> infer -> postprocess (per sample:
    adapter.postprocess, then every metric's update and `on_prediction(id, prediction)`), in the
    source's id order, with the last partial batch. With `post_workers=1` postprocessing runs on its own thread, overlapped with the next
    batch's inference (in order: one worker, so metrics see batches in dataset order); 0 runs it
    on the inference thread.

    Memory stays bounded: at most `2 * batch_size + workers` samples are being read and at most
    two inferred batches wait for postprocessing; metrics keep compact statistics. Returns a perf
    block of scope 'pipeline'. Stage times are each stage's own busy time; with overlap the wall
    time is less than their sum. `cpu` holds the CPU time of the process and of the read,
    preprocess and postprocess stages (their threads' own CPU time); the rest of the process's CPU
    time is inference (the runtime's threads) and the harness. `progress`: an object with
    `update(done)` (default: a zoo.logs progress of the samples, '<label> bs<N> pipeline'; a Ray
    shard reports to the driver instead).
    `keep_latencies`: the block also holds every batch's latency (`latencies_ms`, zoo.shard pools them).
    The block's `interval` treats each batch (the time between two batches' completions) as a
    window: one pass over the source, so a short source gives a wide interval, said as unstable
    against `tolerance` (the pass is never repeated: its metrics are the run's accuracy)."""
    args = (runtime, source, adapter, batch_size, input_name, output_name, metrics, workers, on_prediction, label,
            post_workers)
    if progress is not None:
        return _stream(*args, progress, keep_latencies, tolerance)
    with zoo_logs.progress(f"      {label + ' ' if label else ''}bs{batch_size} pipeline", len(source.ids),
                           "samples") as shown:  # opened before and closed after the timed span
        return _stream(*args, shown, keep_latencies, tolerance)


def _stream(runtime, source, adapter, batch_size: int, input_name: str, output_name: str, metrics: list,
            workers: int, on_prediction, label: str, post_workers: int, progress, keep_latencies: bool,
            tolerance: float) -> dict:
    """run_pipeline's pass, told to `progress`."""
    if post_workers not in (0, 1):
        raise ValueError(f"post_workers must be 0 or 1 (postprocessing is ordered), got {post_workers}")
    ids = source.ids
    n = len(ids)
    clock = StageClock()
    batch_lat, batch_n = [], []
    window = 2 * batch_size + max(workers, 1)
    done = 0

    def post(out, metas, targets, batch_ids, first: int) -> tuple[int, int]:
        c, t = _thread_cpu(), _now()
        check_finite(out, f"{label or 'runtime'} bs{batch_size}: outputs of batch {first // batch_size} "
                          f"(samples {first}..{first + len(batch_ids) - 1})", batch_ids)
        for row, meta, target, sid in zip(out, metas, targets, batch_ids):
            prediction = adapter.postprocess(row, meta)
            for m in metrics:
                m.update(prediction, target)
            if on_prediction is not None:
                on_prediction(sid, prediction)
        return _now() - t, _thread_cpu() - c

    def account(times: tuple[int, int]) -> None:
        ns, cpu_ns = times
        clock.ns["postprocess"] += ns
        clock.cpu_ns["postprocess"] += cpu_ns
        clock.per_batch["postprocess"].append(_ms(ns))

    t_start = _now()
    cpu_start = _cpu()
    last = t_start
    posting: deque = deque()
    with ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="zoo-pre") as pool, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="zoo-post") as post_pool:
        pending: deque = deque()
        it = iter(ids)

        def top_up():
            while len(pending) < window:
                try:
                    sid = next(it)
                except StopIteration:
                    return
                pending.append(pool.submit(_load, source, adapter, sid))

        top_up()
        while pending:
            xs, metas, targets = [], [], []
            while pending and len(xs) < batch_size:
                x, meta, target, t_read, t_pre, c_read, c_pre = pending.popleft().result()  # re-raises a sample's error
                clock.ns["read"] += t_read
                clock.ns["preprocess"] += t_pre
                clock.cpu_ns["read"] += c_read
                clock.cpu_ns["preprocess"] += c_pre
                xs.append(x)
                metas.append(meta)
                targets.append(target)
                top_up()
            t0 = _now()
            batch = np.stack(xs)
            out = runtime.infer({input_name: batch})[output_name]
            t1 = _now()
            clock.ns["infer"] += t1 - t0
            clock.per_batch["infer"].append(_ms(t1 - t0))
            batch_ids = ids[done:done + len(xs)]
            if post_workers:
                while len(posting) >= 2:  # bounded: wait for the oldest batch's postprocessing
                    account(posting.popleft().result())  # re-raises a postprocessing error
                posting.append(post_pool.submit(post, out, metas, targets, batch_ids, done))
            else:
                account(post(out, metas, targets, batch_ids, done))
            now = _now()
            batch_lat.append(_ms(now - last))
            batch_n.append(len(xs))
            last = now
            done += len(xs)
            progress.update(done)
        while posting:
            account(posting.popleft().result())
    wall = (_now() - t_start) / 1e9
    process_cpu = (_cpu() - cpu_start) / 1e9
    total_ns = sum(clock.ns.values()) or 1
    stages = {}
    for name, ns in clock.ns.items():
        st = {"total_s": ns / 1e9, "share": ns / total_ns, "throughput": n / (ns / 1e9) if ns else 0.0}
        if clock.per_batch.get(name):
            st["latency_ms"] = summarize(clock.per_batch[name])
        stages[name] = st
    block = {"batch_size": batch_size, "scope": "pipeline", "status": "ok", "error": None,
             "stopped_by": "dataset_end", "num_samples": n, "wall_s": wall,
             "throughput": n / wall if wall else 0.0, "latency_ms": summarize(batch_lat),
             "stages": stages, "workers": max(workers, 1), "postprocess_workers": post_workers,
             "cpu": {"process_s": process_cpu, "stages_s": {k: v / 1e9 for k, v in clock.cpu_ns.items()}}}
    block["latency_per_sample_ms"] = per_sample(block["latency_ms"], batch_size)
    block["interval"] = interval([(k, ms / 1e3) for k, ms in zip(batch_n, batch_lat)], block["throughput"], tolerance,
                                 1, reason=f"one pass over {n} samples")
    if keep_latencies:
        block["latencies_ms"] = batch_lat
    return block


def cpu_ceiling(pipe: dict, infer_block: dict, cores: int) -> dict | None:
    """How fast the pipeline could go if every stage's CPU time has to share `cores` cores:
    per sample, the runtime's CPU time measured alone (`cpu_s_per_sample` of the infer-only block)
    plus the read, preprocess and postprocess CPU time measured in the pipeline; the ceiling is
    min(infer-only throughput, cores / that sum). When the stages need more CPU than the cores
    left idle by inference, overlapping cannot reach the infer-only rate and the ceiling says by
    how much. Returns the block stored as the pipeline's `cpu.ceiling`, or None without figures."""
    infer_cpu = infer_block.get("cpu_s_per_sample")
    n = pipe.get("num_samples") or 0
    stages = (pipe.get("cpu") or {}).get("stages_s")
    tp = infer_block.get("throughput")
    if infer_cpu is None or not n or not stages or not tp or cores < 1:
        return None
    other = sum(stages.values()) / n
    limit = min(tp, cores / (infer_cpu + other)) if infer_cpu + other > 0 else tp
    return {"cores": cores, "infer_cpu_s_per_sample": infer_cpu, "other_cpu_s_per_sample": other,
            "throughput": limit, "vs_infer": limit / tp,
            "pipeline_vs_ceiling": pipe["throughput"] / limit if limit else None}


def interleaved(a, feeds_a: dict, b, feeds_b: dict, batch_size: int, warmup: int, stability: Stability,
                time_budget_s: float, max_rounds: int = 200, clock=_now, window_s: float = 0.5, tick=None) -> dict:
    """B's speed over A's, measured side by side (pyperf/asv compare across runs; this is the
    same-process form that drift and other work on the cores cannot bias): rounds of one window
    of each, in ABBA order (A then B, then B then A: a linear drift
    costs both the same), `warmup` untimed calls of each first. A side's window is at least
    `stability.window` calls and about `window_s` seconds (from its last warm-up call: windows of a
    few milliseconds measure the scheduler more than the model). Each round gives a ratio
    B throughput / A throughput; the figure is the geometric mean of the rounds' ratios and its
    95% interval is Student's t over their logarithms. Stops once at least `stability.windows`
    rounds, `stability.min_duration_s` and `stability.min_calls` calls a side are in and the interval's relative half-width is within
    `stability.tolerance`, else at `time_budget_s` or `max_rounds` (then unstable, with the reason).
    Returns {ratio, low, high, half_width, rounds, stable, reason, stopped_by, method, a, b} where a and b hold
    each side's throughput (samples/s over all its timed calls) and window throughputs.
    `tick(rounds, seconds)`, if given, is told after each round (a progress bar's)."""
    import math

    from zoo.stats import half_width
    calls = {}
    for name, rt, feeds in (("a", a, feeds_a), ("b", b, feeds_b)):
        last = None
        for _ in range(max(warmup, 1) if window_s else warmup):
            t0 = clock()
            rt.infer(feeds)
            last = (clock() - t0) / 1e9
        calls[name] = max(stability.window, 1, math.ceil(window_s / last) if window_s and last else 0)

    def window(name, rt, feeds) -> float:
        t0 = clock()
        for _ in range(calls[name]):
            rt.infer(feeds)
        return (clock() - t0) / 1e9

    secs: dict[str, list[float]] = {"a": [], "b": []}
    logs: list[float] = []
    t_start = clock()
    stop, half, mean, stopped_by = f"stopped at {max_rounds} rounds", None, 0.0, "iterations"
    for r in range(max_rounds):
        order = (("a", a, feeds_a), ("b", b, feeds_b)) if r % 2 == 0 else (("b", b, feeds_b), ("a", a, feeds_a))
        for name, rt, feeds in order:
            secs[name].append(window(name, rt, feeds))
        logs.append(math.log(calls["b"] * secs["a"][-1] / (calls["a"] * secs["b"][-1])))  # B's rate over A's
        mean = sum(logs) / len(logs)
        half = half_width(logs) if len(logs) >= stability.windows else None
        elapsed = (clock() - t_start) / 1e9
        if half is not None and elapsed >= stability.min_duration_s and \
                min(calls.values()) * len(logs) >= stability.min_calls and math.exp(half) - 1 <= stability.tolerance:
            stop, stopped_by = None, "stable"
            break
        if elapsed >= time_budget_s:
            stop, stopped_by = f"stopped by the time budget ({time_budget_s:g} s)", "time_budget"
            break
        if tick is not None:
            tick(len(logs), elapsed)
    ratio = math.exp(mean)
    low, high = (ratio * math.exp(-half), ratio * math.exp(half)) if half is not None else (None, None)
    rel = (high - low) / 2 / ratio if half is not None else None
    stable = stop is None
    reason = None if stable else (f"{len(logs)} rounds: too few for an interval" if rel is None
                                  else f"{stop}: +-{rel:.1%} above the tolerance +-{stability.tolerance:.1%}")
    side = {k: {"throughput": calls[k] * batch_size * len(v) / sum(v), "window_calls": calls[k],
                "window_throughputs": [calls[k] * batch_size / s for s in v]} for k, v in secs.items()}
    return {"ratio": ratio, "low": low, "high": high, "half_width": rel, "rounds": len(logs), "stable": stable,
            "reason": reason, "stopped_by": stopped_by,
            "method": f"interleaved ABBA windows (A {calls['a']} calls, B {calls['b']} calls); geometric mean of the "
                      "rounds' ratios, Student-t interval over their logarithms",
            "a": side["a"], "b": side["b"]}
