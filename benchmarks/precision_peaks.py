"""This machine's peak per precision, every candidate kernel side by side (zoo.peaks): what a run's
peak_fraction is a fraction of, how far the reduced precisions lift the fp32 limit on this CPU, and
the ISA bound next to each (cores x clock x lanes x FMA units x 2, from the CPU's flags).

Rows: the candidate kernels (torch.mm / MatMul at n = 1024 and 2048, torch conv2d / Conv 3x3 at
64ch 128x128 and 256ch 64x64, through torch, onnxruntime and openvino); columns fp32, bf16, fp16,
int8 in GFLOP/s (int8: GOP/s), '-' where that family has no such kernel, 'refused' where the runtime
ran another precision instead (the reason is printed below). The best of a column, marked '*', is
the peak a run at that precision records. The peaks are read from the zoo's cache as a run reads
them (measured and cached when absent; --remeasure measures again, as ZOO_PEAK_REMEASURE=1 does).
Run it in a model's environment (torch, onnxruntime, openvino):

    PYTHONPATH=. .venvs/unetpp/bin/python benchmarks/precision_peaks.py [--threads 2] [--remeasure] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def measure(threads: int, remeasure: bool, precisions=PRECISIONS) -> dict:
    """{precision: zoo.peaks.machine_peak(...) with 'read_s' (the wall time of the call)}."""
    from zoo.peaks import machine_peak
    out = {}
    for precision in precisions:
        t0 = time.perf_counter()
        out[precision] = machine_peak(precision, threads, progress=lambda line: print(line, file=sys.stderr, flush=True),
                                      remeasure=remeasure)
        out[precision]["read_s"] = round(time.perf_counter() - t0, 3)
    return out


def table(peaks: dict) -> list[str]:
    labels = list(dict.fromkeys(label for p in peaks.values() for label in [*p["candidates"], *p["refused"]]))
    width = max(len(label) for label in labels) + 2 if labels else 10
    lines = [f"{'kernel':<{width}}" + "".join(f"{p:>10}" for p in peaks)]
    for label in labels:
        cells = []
        for p in peaks.values():
            g = p["candidates"].get(label)
            cells.append(f"{g:>9.0f}{'*' if label == p.get('kernel') else ' '}" if g is not None else
                         f"{'refused' if label in p['refused'] else '-':>9} ")
        lines.append(f"{label:<{width}}" + "".join(cells))
    lines.append(f"{'ISA bound':<{width}}" + "".join(
        f"{p['isa_bound']['gflops']:>9.0f} " if p.get("isa_bound", {}).get("gflops") else f"{'-':>9} "
        for p in peaks.values()))
    lines.append("GFLOP/s (int8: GOP/s); * = the peak of that precision")
    for precision, p in peaks.items():
        how = (f"cached, measured {p['measured_at']}" if p["cached"] else f"measured now ({p['measure_s']:.1f} s)") \
            + f"; {p.get('measure_count', 1)} measurement(s) kept" + (
                f"; busy: other processes used {p['others_cpu_share']:.0%} of these CPUs" if p.get("busy") else "")
        lines.append(f"{precision}: " + (f"{p['gflops']:.0f} ({p['kernel']}: {p['kernel_details'][p['kernel']]})"
                                         if "gflops" in p else "unavailable") + f"; {how}; read in {p['read_s']:.2f} s")
        for label, why in p["refused"].items():
            lines.append(f"  refused {label}: {why}")
        bound = p.get("isa_bound") or {}
        lines.append("  ISA bound: " + (f"{bound['gflops']:.0f}" if bound.get("gflops") else
                                         f"none ({bound.get('reason')})") + "; " + "; ".join(bound.get("assumptions", [])))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="threads (default: the cores this process may use)")
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated (default: all four)")
    ap.add_argument("--remeasure", action="store_true", help="measure again and replace the cached peaks")
    ap.add_argument("--json", type=Path, help="also write the peaks as JSON here")
    args = ap.parse_args(argv)
    from zoo.envinfo import ISA_FLAGS, cpu_isa, cpu_name
    from zoo.runtimes.base import default_threads
    precisions = [p for p in args.precisions.split(",") if p]
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown:
        ap.error(f"--precisions: unknown {', '.join(unknown)} (known: {', '.join(PRECISIONS)})")
    threads = args.threads or default_threads()
    isa = cpu_isa()
    print(f"{cpu_name()}, {threads} threads; ISA: " + ", ".join(f"{f}{'' if f in isa else ' (no)'}" for f in ISA_FLAGS))
    peaks = measure(threads, args.remeasure, precisions)
    print("\n".join(table(peaks)))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "threads": threads, "isa": isa, "peaks": peaks},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
