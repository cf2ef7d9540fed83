"""This machine's GEMM peak per precision, side by side, through each runtime's own kernels
(zoo.peaks): what a bf16 or int8 run's peak_fraction is a fraction of, and how far the reduced
precisions can lift the fp32 limit on this CPU (its ISA flags printed first).

Rows: the kernel family (torch: torch.mm; onnxruntime: a MatMul / QDQ-MatMul ONNX graph; openvino:
the same graphs with INFERENCE_PRECISION_HINT); columns fp32, bf16, fp16, int8 in GFLOP/s (int8:
GOP/s), '-' where that runtime has no such kernel or the CPU runs another precision instead (the
reason is printed below). The row a run uses for its precision is marked '*' (zoo.peaks.KERNELS;
fp32 runs always use torch.mm). Run it in a model's environment (torch, onnxruntime, openvino):

    PYTHONPATH=. .venvs/unetpp/bin/python benchmarks/precision_peaks.py [--threads 2] [--n 2048] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FAMILIES = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def measure(threads: int, n: int, repeats: int) -> dict:
    """{family: {precision: peak dict or {'unavailable': why}}}."""
    from zoo.errors import ZooError
    from zoo.peaks import precision_peak
    out: dict[str, dict] = {}
    for family in FAMILIES:
        for precision in PRECISIONS:
            try:
                out.setdefault(family, {})[precision] = precision_peak(precision, threads, n=n, repeats=repeats,
                                                                       family=family)
            except ZooError as exc:
                out[family][precision] = {"unavailable": str(exc)}
    return out


def table(peaks: dict) -> list[str]:
    from zoo.peaks import kernel_family
    used = {(kernel_family(p, None) if p != "fp32" else "torch", p) for p in PRECISIONS}
    used |= {(kernel_family(p, f), p) for f in FAMILIES for p in PRECISIONS if p != "fp32"}
    lines = [f"{'kernels':<12}" + "".join(f"{p:>10}" for p in PRECISIONS)]
    notes = []
    for family, row in peaks.items():
        cells = []
        for p in PRECISIONS:
            g = row[p].get("gflops")
            mark = "*" if (family, p) in used and g is not None else " "
            cells.append(f"{g:>9.0f}{mark}" if g is not None else f"{'-':>9} ")
            if g is not None:
                notes.append(f"  {family} {p}: {row[p]['kernel']}")
            else:
                notes.append(f"  {family} {p}: unavailable: {row[p]['unavailable']}")
        lines.append(f"{family:<12}" + "".join(cells))
    return lines + ["GFLOP/s (int8: GOP/s); * = the kernel a run at that precision on that runtime is "
                    "measured against"] + notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="threads (default: the cores this process may use)")
    ap.add_argument("--n", type=int, default=2048, help="matrix size (default 2048, as the run's peaks)")
    ap.add_argument("--repeats", type=int, default=10, help="calls, the best counts (default 10)")
    ap.add_argument("--json", type=Path, help="also write the peaks as JSON here")
    args = ap.parse_args(argv)
    from zoo.envinfo import ISA_FLAGS, cpu_isa, cpu_name
    from zoo.runtimes.base import default_threads
    threads = args.threads or default_threads()
    isa = cpu_isa()
    print(f"{cpu_name()}, {threads} threads; ISA: " + ", ".join(f"{f}{'' if f in isa else ' (no)'}" for f in ISA_FLAGS))
    peaks = measure(threads, args.n, args.repeats)
    print("\n".join(table(peaks)))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "threads": threads, "isa": isa, "n": args.n,
                                         "peaks": peaks}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
