"""This machine's peak at each precision, so a run's achieved GFLOP/s is read as a fraction of
what the CPU can do at the arithmetic it actually runs (a bf16 model at 40% of the fp32 peak may
be at 15% of what the bf16 units do).

The peak of a precision is the best of several kernels and shapes, through every installed
runtime that measures that precision (`candidates`), on the run's threads. Which runtimes measure
which precisions, how their kernels are named and run, is each runtime's own (zoo.runtimes: its
peak_precisions and peak_seconds hook); the kernels' graphs and inputs are built by zoo.peak_kernels
(which the runtimes import too); this module picks the best, bounds it and caches it:

- a square matrix product, n = 1024 and 2048: torch.mm, and a one-MatMul ONNX graph run by
  ONNX Runtime and by OpenVINO's CPU plugin;
- a typical 3x3 convolution (stride 1, padding 1, batch 1, NCHW), 64 -> 64 channels at 128x128
  and 256 -> 256 channels at 64x64: torch conv2d, and a one-Conv ONNX graph through ONNX Runtime
  and OpenVINO. One matrix product alone is not the peak: on an AMD EPYC with AVX-512 a UNet++
  run's convolutions reached 197-204 GFLOP/s on ONNX Runtime where torch.mm and ONNX Runtime's
  MatMul at 2048 reached 195 (a recorded peak_fraction of 1.05).

Precisions: fp32 (every family); bf16 (torch on bfloat16 tensors; OpenVINO with
INFERENCE_PRECISION_HINT bf16); fp16 (OpenVINO, hint f16); int8 (the QDQ form of a statically
quantized MatMul / Conv: uint8 activations, int8 weights, per-tensor scales, what ONNX Runtime's
static quantizer writes; ONNX Runtime fuses it into its integer kernels, OpenVINO turns it into
FakeQuantize and an int8 MatMul / Convolution). What ran is read back from the runtime (ONNX
Runtime's optimised graph, OpenVINO's runtime model precision): a kernel that did not run the
precision asked (a fallback to fp32) is `refused` with the reason, never counted; a precision no
kernel runs has `unavailable` instead of gflops.

Operations are 2 x multiply-accumulates (a product: 2 n^3; a convolution: 2 x C_out x C_in x 9 x
H x W), the count zoo.cost gives a model's FLOPs; for int8 they are integer operations (GOP/s).

Next to the measurement, `isa_bound`: cores (= threads used) x clock x vector lanes x FMA units x
2, from the CPU's flags and frequency, with its assumptions spelt out.

Measured once per machine and kept in the zoo's cache (`<cache>/peaks/`, JSON with the date
measured): the key is the CPU name, its full flag list, the threads, the precision, the kernels
measured and the versions of torch, onnxruntime and openvino, so a run reads its peak at no cost
(`cached: true`, `measured_at`). ZOO_PEAK_REMEASURE=1 measures again and replaces the entry.

A peak measured while other processes used this process's CPUs (`others_cpu_share` above 0.2, from
/proc/stat) is kept with `busy: true` and a warning: contention only lowers a rate, so the next run
that finds the machine quiet (a 0.2 s look at /proc/stat) measures again and keeps each kernel's
best of the two (`measure_count` counts the measurements kept)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import util
from pathlib import Path

from zoo import logs
from zoo.errors import ZooError, one_line
from zoo.runtimes import PRECISIONS, peak_runtimes, rate_unit, registry

MATMUL_SIZES = (1024, 2048)
CONV_SHAPES = ((64, 128), (256, 64))  # (channels in = out, height = width) of a 3x3 convolution
REPEATS, BUDGET_S = 25, 2.0  # per kernel: the fastest of up to 25 timed calls, stopped after 2 s of them
REMEASURE_ENV = "ZOO_PEAK_REMEASURE"
BUSY_SHARE = 0.2  # other processes using more of this process's CPUs than this: the peak may be low
PROC_STAT = Path("/proc/stat")
CACHE_VERSION = 1
CPUFREQ_MAX = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
CPUINFO = Path("/proc/cpuinfo")


def unit(precision: str) -> str:
    return rate_unit(precision)


def _warn(msg: str) -> None:
    logs.warning(f"warning: {msg}")


# ---------------------------------------------------------------- the kernels

def kernel_families() -> tuple[str, ...]:
    """The runtimes whose kernels are measured (zoo.runtimes.peak_runtimes), in their order: the
    kernel families (torch, onnxruntime, openvino)."""
    return tuple(cls.name for cls in peak_runtimes())


def runs(family: str) -> tuple[str, ...]:
    """The precisions a family's kernels measure (its runtime's peak_precisions)."""
    cls = registry().get(family)
    return tuple(cls.peak_precisions) if cls is not None and "peak_seconds" in vars(cls) else ()


@dataclass(frozen=True)
class Kernel:
    """One candidate: a family's (a runtime of zoo.runtimes.peak_runtimes: torch, onnxruntime,
    openvino) MatMul of size (n,) or 3x3 Conv of size (channels, side)."""
    family: str
    op: str
    size: tuple

    @property
    def label(self) -> str:
        cls = registry().get(self.family)
        name = (cls.peak_op_labels if cls is not None else {}).get(self.op, f"{self.family} {self.op}")
        if self.op == "MatMul":
            return f"{name} {self.size[0]}"
        c, s = self.size
        return f"{name} 3x3 {c}ch {s}x{s}"

    @property
    def ops(self) -> int:
        """Operations of one call: 2 x multiply-accumulates."""
        if self.op == "MatMul":
            return 2 * self.size[0] ** 3
        c, s = self.size
        return 2 * c * c * 9 * s * s


def installed(family: str) -> bool:
    """The family's runtime's package (Runtime.package) is installed (found, not imported)."""
    cls = registry().get(family)
    package = cls.package if cls is not None else None
    return package is not None and util.find_spec(package) is not None


def kernels(precision: str, families=None) -> list[Kernel]:
    """The candidates of `precision`: each installed family that runs it, MatMul then Conv shapes."""
    if precision not in PRECISIONS:
        raise ZooError(f"no peak for precision {precision!r} (known: {', '.join(PRECISIONS)})")
    chosen = [f for f in (families or kernel_families()) if precision in runs(f) and installed(f)]
    return [Kernel(f, "MatMul", (n,)) for f in chosen for n in MATMUL_SIZES] + \
           [Kernel(f, "Conv", shape) for f in chosen for shape in CONV_SHAPES]


def measure(precision: str, threads: int, progress=None, repeats: int = REPEATS, budget_s: float = BUDGET_S,
            candidates: list[Kernel] | None = None) -> dict:
    """{'precision', 'threads', 'gflops', 'kernel', 'candidates': {label: gflops}, 'kernel_details':
    {label: what ran}, 'refused': {label: why}, 'method'}: every kernel of `precision` measured now,
    the best counts. No kernel ran: 'unavailable' (the reasons) instead of gflops and kernel.
    A zoo.logs progress shows the kernels measured; `progress(line)` is told after each kernel."""
    todo = kernels(precision) if candidates is None else candidates
    rates, details, refused = {}, {}, {}
    best = None
    with logs.progress(f"      measuring the {precision} peak", len(todo), "kernels") as bar:
        for i, k in enumerate(todo, 1):
            bar.update(description=f"      measuring the {precision} peak ({k.label})")
            try:
                if precision not in runs(k.family):
                    raise ZooError(f"{k.family}: no {precision} kernel (it runs {', '.join(runs(k.family))})")
                seconds, details[k.label] = registry()[k.family].peak_seconds(k, precision, threads, repeats,
                                                                              budget_s)
                rates[k.label] = k.ops / seconds / 1e9
                best = k.label if best is None or rates[k.label] > rates[best] else best
            except ZooError as exc:
                refused[k.label] = str(exc)[:300]
            except Exception as exc:  # noqa: BLE001  a kernel a runtime cannot build or run is not a candidate
                refused[k.label] = f"{k.family}: cannot run the {precision} {k.op} ({one_line(exc)[:250]})"
            bar.update(i)
            if progress:
                done = f"best {rates[best]:.0f} {unit(precision)} ({best})" if best else "none ran yet"
                progress(f"      peak {precision}: {i}/{len(todo)} kernels, {done}"
                         + (f"; {k.label} refused" if k.label in refused else ""))
    out = {"precision": precision, "threads": threads,
           "method": f"the best of {len(todo)} kernels ({', '.join(k.label for k in todo)}) at {precision} on "
                     f"{threads} threads, each the fastest of up to {repeats} calls within {budget_s:g} s; "
                     "operations = 2 x multiply-accumulates" + (" (int8: integer operations, GOP/s)"
                                                                if precision == "int8" else ""),
           "candidates": rates, "kernel_details": details, "refused": refused}
    if best is None:
        out["unavailable"] = ("; ".join(f"{label}: {why}" for label, why in refused.items())
                              or f"no installed runtime runs {precision}")[:1000]
    else:
        out.update(gflops=rates[best], kernel=best)
    return out


# ---------------------------------------------------------------- the ISA bound

def cpu_flags(cpuinfo: Path = CPUINFO) -> list[str]:
    """Every flag of the first CPU in /proc/cpuinfo (empty where it cannot be read)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("flags"):
                return sorted(set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return []


def cpu_clock(cpufreq: Path = CPUFREQ_MAX, cpuinfo: Path = CPUINFO) -> tuple[float | None, str]:
    """(GHz, where it was read): cpufreq's cpuinfo_max_freq, else the 'cpu MHz' of /proc/cpuinfo,
    else (None, 'frequency unknown')."""
    try:
        return int(Path(cpufreq).read_text().strip()) / 1e6, f"{cpufreq} (maximum clock)"
    except (OSError, ValueError):
        pass
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) / 1e3, \
                    "'cpu MHz' of /proc/cpuinfo (the current or nominal clock: a boost clock above it can exceed the bound)"
    except (OSError, ValueError):
        pass
    return None, "frequency unknown"


# a 16-bit float precision -> (its AMX flag, its AVX-512 flag, what that AVX-512 instruction does)
HALF = {"bf16": ("amx_bf16", "avx512_bf16", "vdpbf16ps does 2 bf16 products per fp32 lane"),
        "fp16": ("amx_fp16", "avx512_fp16", "32 fp16 lanes per 512-bit FMA")}


def isa_bound(precision: str, threads: int, flags, clock_ghz: float | None, clock_source: str = "") -> dict:
    """{'gflops' (None when no bound), 'method', 'assumptions', 'ops_per_cycle_per_core', 'cores',
    'clock_ghz', 'clock_source', 'reason' (when gflops is None)}: cores x clock x lanes x FMA units x
    2 of `precision` on a CPU with `flags`."""
    flags = set(flags)
    assumptions = [f"cores = the {threads} threads used, one per physical core (SMT siblings share their core's units)"]
    if "avx512f" in flags:
        lanes32, width = 16, "AVX-512 (avx512f): 16 fp32 lanes"
    elif "avx2" in flags or "avx" in flags:
        lanes32, width = 8, "AVX/AVX2: 8 fp32 lanes"
    else:
        lanes32, width = 4, "no AVX: SSE, 4 fp32 lanes"
    fma = "fma" in flags or "avx512f" in flags
    units = 2 if fma else 1
    assumptions.append(f"{width}; " + ("2 FMA units per core (AVX-512 server cores such as Xeon Gold/Platinum and "
                                        "AMD Zen 5; a core with one 512-bit FMA unit, or splitting 512-bit operations "
                                        "in two as AMD Zen 4 does, reaches half)" if fma else
                                        "no FMA: one multiply and one add unit per core"))
    per_core, reason = lanes32 * units * 2, None
    if precision in HALF:
        amx, vector, does = HALF[precision]
        if amx in flags:
            per_core = 1024
            assumptions.append(f"AMX (amx_tile, {amx}) present: 1024 {precision} operations per cycle per core (the "
                               "TMUL figure of Sapphire Rapids), the bound is AMX's, not the vector units'")
        elif vector in flags:
            per_core *= 2
            assumptions.append(f"{vector}: {does} (2x fp32 lanes)")
        else:
            assumptions.append(f"no {precision} instructions: {precision} is computed in fp32 lanes (the fp32 bound)")
    elif precision == "int8":
        if "amx_int8" in flags:
            per_core = 2048
            assumptions.append("AMX (amx_tile, amx_int8) present: 2048 int8 operations per cycle per core (the "
                               "TMUL figure of Sapphire Rapids), the bound is AMX's, not the vector units'")
        elif "avx512_vnni" in flags and "avx512f" in flags:
            per_core = 16 * 4 * units * 2
            assumptions.append("avx512_vnni: vpdpbusd does 4 int8 multiply-accumulates per 32-bit lane (4x fp32 "
                               "lanes), on the FMA units; operations = 2 x multiply-accumulates (GOP/s)")
        elif "avx_vnni" in flags:
            per_core = 8 * 4 * units * 2
            assumptions.append("avx_vnni: 256-bit vpdpbusd, 4 int8 multiply-accumulates per 32-bit lane")
        else:
            per_core, reason = None, "no VNNI or AMX: int8 runs through a multi-instruction sequence, no simple bound"
    if clock_ghz is None and reason is None:
        reason = "frequency unknown"
    assumptions.append(f"clock {clock_ghz:.3f} GHz from {clock_source}" if clock_ghz else "clock: frequency unknown")
    out = {"gflops": threads * clock_ghz * per_core if reason is None else None,
           "method": "cores x clock x vector lanes x FMA units x 2 (an FMA is 2 operations), from the CPU's flags "
                     "and frequency; not measured",
           "assumptions": assumptions, "ops_per_cycle_per_core": per_core, "cores": threads, "clock_ghz": clock_ghz,
           "clock_source": clock_source or None}
    if reason:
        out["reason"] = reason
    return out


def machine_isa_bound(precision: str, threads: int) -> dict:
    ghz, source = cpu_clock()
    return isa_bound(precision, threads, cpu_flags(), ghz, source)


# ---------------------------------------------------------------- other processes on our CPUs

def _cpu_sample(stat: Path = PROC_STAT) -> tuple[float, float, float] | None:
    """(busy seconds of the CPUs this process may use, from /proc/stat; this process's CPU seconds;
    monotonic time), None where /proc/stat cannot be read."""
    try:
        allowed = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        busy = 0
        for line in Path(stat).read_text().splitlines():
            fields = line.split()
            if fields and fields[0] in allowed:  # user nice system idle iowait irq softirq steal ...
                ticks = [int(x) for x in fields[1:9]]
                busy += sum(ticks) - ticks[3] - ticks[4]
        t = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), t.user + t.system, time.monotonic()
    except (OSError, ValueError, AttributeError):
        return None


def others_share(before, after) -> float | None:
    """The share of this process's CPUs that other processes used between two _cpu_samples."""
    if before is None or after is None or after[2] <= before[2]:
        return None
    cpus = len(os.sched_getaffinity(0))
    others = (after[0] - before[0]) - (after[1] - before[1])
    return min(1.0, max(0.0, others / ((after[2] - before[2]) * cpus)))


def quiet_now(window_s: float = 0.2) -> bool:
    """Whether other processes leave this process's CPUs idle now (a look of `window_s` seconds)."""
    before = _cpu_sample()
    time.sleep(window_s)
    share = others_share(before, _cpu_sample())
    return share is not None and share <= BUSY_SHARE


def _merge(old: dict, new: dict) -> dict:
    """`new` with each kernel's best rate of the two measurements (contention only lowers a rate)."""
    rates, details = dict(new["candidates"]), dict(new["kernel_details"])
    for label, g in (old.get("candidates") or {}).items():
        if g > rates.get(label, 0.0):
            rates[label], details[label] = g, old["kernel_details"].get(label, "")
    out = {**new, "candidates": rates, "kernel_details": details,
           "measure_count": old.get("measure_count", 1) + new.get("measure_count", 1)}
    out["refused"] = {k: v for k, v in new["refused"].items() if k not in rates}
    if rates:
        best = max(rates, key=rates.get)
        out.update(gflops=rates[best], kernel=best)
        out.pop("unavailable", None)
    return out


# ---------------------------------------------------------------- the cache

def versions() -> dict:
    """{package: version} of the installed kernel families' packages (torch, onnxruntime, openvino)."""
    from zoo.envinfo import package_versions
    return package_versions([cls.package for cls in peak_runtimes()])


def cache_key(precision: str, threads: int, candidates: list[Kernel]) -> dict:
    from zoo.envinfo import cpu_name
    return {"version": CACHE_VERSION, "cpu": cpu_name(), "flags": cpu_flags(), "threads": threads,
            "precision": precision, "kernels": [k.label for k in candidates], "versions": versions()}


def cache_path(key: dict) -> Path:
    from zoo.fileutil import text_sha256
    from zoo.paths import cache_dir
    digest = text_sha256(json.dumps(key, sort_keys=True))[:20]
    return cache_dir() / "peaks" / f"{key['precision']}-{key['threads']}t-{digest}.json"


def _read(path: Path, key: dict) -> tuple[dict | None, str | None]:
    """(the cached peak, None), (None, None) when there is no entry, (None, why) when it is damaged."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"unreadable ({one_line(exc)[:120]})"
    peak = data.get("peak") if isinstance(data, dict) else None
    if not isinstance(peak, dict) or data.get("key") != key:
        return None, "not a peak entry of this machine, threads and versions"
    g = peak.get("gflops")
    good = (isinstance(g, (int, float)) and not isinstance(g, bool) and g > 0
            and (peak.get("candidates") or {}).get(peak.get("kernel")) == g) or \
           (g is None and isinstance(peak.get("unavailable"), str))
    if not good or peak.get("precision") != key["precision"] or not isinstance(peak.get("measured_at"), str):
        return None, "its peak is malformed (gflops, kernel, candidates, precision or measured_at)"
    return peak, None


def remeasure_asked() -> bool:
    return os.environ.get(REMEASURE_ENV, "").strip().lower() in ("1", "true", "yes")


def machine_peak(precision: str, threads: int, progress=None, remeasure: bool | None = None,
                 candidates: list[Kernel] | None = None, **measure_kw) -> dict:
    """The peak of `precision` on `threads` threads (measure()'s fields, `isa_bound`, `measured_at`,
    `measure_s`), read from the cache (`cached: true`) or measured now and cached (`cached: false`).
    `remeasure` (default: ZOO_PEAK_REMEASURE=1) measures again and replaces the entry; a damaged
    entry is measured again with a warning; a `busy` one again when the machine is quiet now, keeping
    each kernel's best of the two. The cache is written atomically under a lock, so
    concurrent runs measure once (and never at the same time); a cache that cannot be written
    leaves the measurement uncached, with a warning."""
    from zoo.cache import entry_lock
    from zoo.fileutil import atomic_write_text
    todo = kernels(precision) if candidates is None else candidates
    remeasure = remeasure_asked() if remeasure is None else remeasure
    key = cache_key(precision, threads, todo)
    path = cache_path(key)
    if not remeasure:
        peak, problem = _read(path, key)
        if peak is not None and not (peak.get("busy") and quiet_now()):
            return {**peak, "cached": True}
        if problem:
            _warn(f"peak cache {path}: {problem}; measuring again")

    def fresh() -> dict:
        t0, before = time.perf_counter(), _cpu_sample()
        peak = measure(precision, threads, progress, candidates=todo, **measure_kw)
        share = others_share(before, _cpu_sample())
        peak.update(others_cpu_share=None if share is None else round(share, 3), busy=bool(share and share > BUSY_SHARE),
                    measure_count=1)
        if peak["busy"]:
            _warn(f"other processes used {share:.0%} of this process's CPUs while the {precision} peak was measured: "
                  "it may be low; the next run on a quiet machine measures it again")
        peak["isa_bound"] = machine_isa_bound(precision, threads)
        peak["measured_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        peak["measure_s"] = round(time.perf_counter() - t0, 3)
        return peak

    peak = None
    try:
        with entry_lock(path):
            cached = None
            if not remeasure:  # another run may have measured it while this one waited
                cached, _ = _read(path, key)
                if cached is not None and not cached.get("busy"):
                    return {**cached, "cached": True}
            peak = _bounded(fresh() if cached is None else _merge(cached, fresh()))
            atomic_write_text(path, json.dumps({"key": key, "peak": peak}, indent=1, allow_nan=False) + "\n")
    except OSError as exc:
        _warn(f"peak cache {path.parent}: cannot be written ({exc.strerror or exc}); the peak is not kept")
        peak = peak or _bounded(fresh())
    return {**peak, "cached": False}


def _bounded(peak: dict) -> dict:
    """The peak with a note in its isa_bound when the measurement is above the bound."""
    bound = peak["isa_bound"]
    bound.pop("note", None)
    if bound.get("gflops") and (peak.get("gflops") or 0) > bound["gflops"]:
        bound["note"] = (f"the measured peak {peak['gflops']:.0f} is above this bound: the clock read is below the "
                         "one the kernels ran at, or the threads are not on separate cores as assumed")
    return peak


# ---------------------------------------------------------------- a block's fraction of the peak

def set_fraction(block: dict, peak: float | None, precision: str = "fp32") -> str | None:
    """block['peak_fraction'] = block['gflops'] / peak; None when there is no peak, and None with
    block['peak_note'] when the block is above the peak (the peak measurement is then incomplete: a
    fraction is never above 1). Returns the note, else None."""
    block.pop("peak_note", None)
    if not peak:
        block["peak_fraction"] = None
        return None
    if block["gflops"] > peak:
        block["peak_fraction"] = None
        block["peak_note"] = (f"the model reached {block['gflops']:.1f} {unit(precision)}, above the measured peak "
                              f"{peak:.1f}: peak measurement incomplete")
        return block["peak_note"]
    block["peak_fraction"] = block["gflops"] / peak
    return None


def apply_peak(perf: list[dict], peak: float | None, precision: str = "fp32") -> list[str]:
    """Every block with gflops gets peak_gflops (the peak used, when there is one) and its
    peak_fraction (set_fraction); returns 'bs<n> <scope>: <note>' for each block above the peak
    (a sweep, or the merge of --isolate's children, logs them as warnings)."""
    notes = []
    for block in perf:
        if block.get("gflops") is None:
            continue
        if peak:
            block["peak_gflops"] = peak
        note = set_fraction(block, peak, precision)
        if note:
            notes.append(f"bs{block['batch_size']} {block['scope']}: {note}")
    return notes
