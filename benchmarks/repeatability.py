"""Do two identical back-to-back runs agree within the spread they report?

Runs `python -m zoo run` twice with the same arguments (in a temporary cache, exported and compiled
once by an unmeasured first run), then for every batch size compares the two infer-only
throughputs: they agree when their relative difference is within the two runs' 95% intervals
(`perf[].interval.half_width`, schema 1.11: the relative half-widths added in quadrature, the
half-width of the difference of two independent figures), or, for records before 1.11, the larger
of their window spreads (`perf[].stability.spread`, stop-when-stable), or `--tolerance` when a run
has neither. Prints a table; exit 0 when every batch size agrees, 1 otherwise, 2 when a run fails.

    .venvs/unetpp/bin/python benchmarks/repeatability.py --model unetpp --batch-sizes 1,16
    .venvs/fcn8s/bin/python benchmarks/repeatability.py --model fcn8s --weights work/fcn8s_random.pth \\
        --batch-sizes 1 -- --iters 10 --stable-window 2
Arguments after `--` go to `zoo run` unchanged.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_once(python: str, args: list[str], out: Path, env: dict) -> dict:
    proc = subprocess.run([python, "-m", "zoo", "run", *args, "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(tail[0])
    return json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())


def bound_of(p: dict, q: dict, tolerance: float) -> float:
    """How far two runs' throughputs may differ and still agree: their intervals' relative
    half-widths in quadrature; else (before 1.11) the larger window spread; else `tolerance`."""
    halves = [(b.get("interval") or {}).get("half_width") for b in (p, q)]
    if all(h is not None for h in halves):
        return math.hypot(*halves)
    if not any(b.get("interval") for b in (p, q)):
        spreads = [(b.get("stability") or {}).get("spread") for b in (p, q)]
        if all(s is not None for s in spreads):
            return max(spreads)
    return tolerance


def infer_blocks(rec: dict) -> dict[int, dict]:
    return {p["batch_size"]: p for p in rec["perf"] if p["scope"] == "infer_only" and p["status"] == "ok"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--weights")
    ap.add_argument("--data")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--batch-sizes", default="1")
    ap.add_argument("--tolerance", type=float, default=0.05,
                    help="agreement bound when a run reports neither an interval nor a spread")
    ap.add_argument("--python", default=None, help="interpreter (default: .venvs/<model>/bin/python or this one)")
    a = ap.parse_args(argv)
    python = a.python or (str(ROOT / ".venvs" / a.model / "bin" / "python")
                          if (ROOT / ".venvs" / a.model / "bin" / "python").exists() else sys.executable)
    args = ["--model", a.model, "--backend", a.backend, "--batch-sizes", a.batch_sizes, *extra]
    if a.weights:
        args += ["--weights", str(Path(a.weights).resolve())]
    if a.data:
        args += ["--data", str(Path(a.data).resolve())]
    with tempfile.TemporaryDirectory(prefix="zoo-repeat-") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "ZOO_CACHE": str(tmp / "cache"),
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        try:
            print("warm-up run (export, compile; not compared)", file=sys.stderr)
            run_once(python, args, tmp / "r0", env)
            recs = [run_once(python, args, tmp / f"r{i}", env) for i in (1, 2)]
        except RuntimeError as exc:
            print(f"error: a run failed: {exc}", file=sys.stderr)
            return 2
    a_blocks, b_blocks = (infer_blocks(r) for r in recs)
    ok = True
    print(f"{'bs':>4} {'run 1/s':>10} {'run 2/s':>10} {'diff':>7} {'bound':>7}  stopped by       agree")
    for bs in sorted(set(a_blocks) & set(b_blocks)):
        p, q = a_blocks[bs], b_blocks[bs]
        diff = abs(p["throughput"] - q["throughput"]) / max(p["throughput"], q["throughput"])
        bound = bound_of(p, q, a.tolerance)
        agree = diff <= bound
        ok &= agree
        print(f"{bs:>4} {p['throughput']:>10.2f} {q['throughput']:>10.2f} {diff:>7.1%} {bound:>7.1%}  "
              f"{p['stopped_by'] + '/' + q['stopped_by']:<16} {'yes' if agree else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
