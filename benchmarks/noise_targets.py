"""Does the speed gate know noise? Issue 22's targets, measured on this machine.

Two experiments on UNet++ (built-in data, batch size 1 unless --batch-size), each N pairs
(default 20):

  identical: `python -m zoo ab --base onnxruntime --candidate onnxruntime`: the same configuration twice;
             the target is "no significant change" in at least N-1 of N;
  planted:   `--candidate onnxruntime-slow10`, a test-only runtime plug-in (tests/fixtures/runtimes/
             slow10.py, loaded through ZOO_RUNTIME_PLUGINS) that makes every call 10% slower;
             the target is "slower" in at least N-1 of N.

With `--mode compare` each pair is instead two separate `python -m zoo run`s judged by
`invoke compare`'s comparator (runner.compare): what a gate across runs can and cannot tell on a
shared machine (run with the host's python: it imports runner/, and the runs use the model's env).

Prints one line per pair (ratio, 95% interval, verdict) and the counts; writes noise_targets.json
and .md under --out; exit 1 when a target is missed, 2 when a run fails.

    python3 benchmarks/noise_targets.py                       # ~25 min here, nothing else running
    python3 benchmarks/noise_targets.py --pairs 5 --experiments planted
    python3 benchmarks/noise_targets.py --mode compare --pairs 10
Arguments after `--` go to every `zoo ab` / `zoo run` unchanged."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "tests" / "fixtures" / "runtimes" / "slow10.py"
EXPECT = {"identical": "no significant change", "planted": "slower"}
B_SIDE = {"identical": "onnxruntime", "planted": "onnxruntime-slow10"}


def _env() -> dict:
    env = dict(os.environ, ZOO_RUNTIME_PLUGINS=str(PLUGIN), PYTHONPATH=str(ROOT))
    return env


def _zoo(python: str, args: list[str], env: dict) -> Path:
    proc = subprocess.run([python, "-m", "zoo", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"zoo {args[0]} failed: {tail[0]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def ab_pair(python: str, model: str, experiment: str, bs: int, out: Path, extra: list[str], env: dict) -> dict:
    path = _zoo(python, ["ab", "--model", model, "--base", "onnxruntime", "--candidate", B_SIDE[experiment],
                         "--batch-sizes", str(bs), "--out", str(out), *extra], env)
    rec = json.loads(path.read_text())
    return {k: rec[k] for k in ("ratio", "low", "high", "rounds", "stable", "verdict")}


def compare_pair(python: str, model: str, experiment: str, bs: int, out: Path, extra: list[str], env: dict) -> dict:
    sys.path.insert(0, str(ROOT))
    from runner.compare import compare
    recs = []
    for runtime in ("onnxruntime", B_SIDE[experiment]):
        path = _zoo(python, ["run", "--model", model, "--runtime", runtime, "--batch-sizes", str(bs),
                             "--out", str(out / f"{len(list(out.glob('*')))}"), *extra], env)
        rec = json.loads(path.read_text())
        rec["runtime"]["name"] = "onnxruntime"  # the planted side is the same configuration, slowed
        recs.append(rec)
    c = compare([recs[0]], [recs[1]], max_throughput_drop=0.05)
    row = next(r for r in c.rows if r.kind == "throughput" and r.item == f"bs{bs} infer_only")
    return {"ratio": row.change, "low": getattr(row, "ratio_low", None), "high": getattr(row, "ratio_high", None),
            "rounds": None, "stable": None, "verdict": getattr(row, "verdict", row.status)}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="unetpp")
    ap.add_argument("--python", help="the model's interpreter (default: .venvs/<model>/bin/python)")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--experiments", default="identical,planted")
    ap.add_argument("--mode", choices=("ab", "compare"), default="ab")
    ap.add_argument("--out", type=Path, default=ROOT / "work" / "noise_targets")
    a = ap.parse_args(argv)
    python = a.python or str(ROOT / ".venvs" / a.model / "bin" / "python")
    env = _env()
    pair = ab_pair if a.mode == "ab" else compare_pair
    results, code = {}, 0
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zoo-noise-") as tmp:
        for experiment in [e.strip() for e in a.experiments.split(",") if e.strip()]:
            rows = []
            for i in range(a.pairs):
                t0 = time.time()
                try:
                    r = pair(python, a.model, experiment, a.batch_size, Path(tmp) / f"{experiment}{i}", extra, env)
                except RuntimeError as exc:
                    print(f"error: {experiment} pair {i + 1}: {exc}", file=sys.stderr)
                    return 2
                r["seconds"] = time.time() - t0
                rows.append(r)
                iv = f"[{r['low']:.3f}, {r['high']:.3f}]" if r["low"] is not None else "(no interval)"
                print(f"{experiment:<9} {i + 1:>2}/{a.pairs}: x{r['ratio']:.3f} {iv} {r['verdict']}"
                      + ("" if r["stable"] in (None, True) else " (unstable)") + f" ({r['seconds']:.0f} s)", flush=True)
            hits = sum(r["verdict"] == EXPECT[experiment] for r in rows)
            need = a.pairs - 1 if a.pairs >= 2 else a.pairs
            ok = hits >= need
            code = code or (0 if ok else 1)
            results[experiment] = {"expected": EXPECT[experiment], "hits": hits, "pairs": a.pairs, "target": need,
                                   "met": ok, "rows": rows}
            print(f"{experiment}: {EXPECT[experiment]} in {hits} of {a.pairs} (target {need}): "
                  f"{'MET' if ok else 'MISSED'}", flush=True)
    from zoo.envinfo import cpu_isa, cpu_name
    meta = {"mode": a.mode, "model": a.model, "batch_size": a.batch_size, "cpu": cpu_name(), "isa": list(cpu_isa()),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "extra": extra}
    from zoo.fileutil import atomic_write_text
    atomic_write_text(a.out / "noise_targets.json", json.dumps({**meta, "results": results}, indent=1) + "\n")
    md = [f"# Noise targets ({a.mode}, {a.model} bs{a.batch_size}, {meta['cpu']}, {meta['date']})", "",
          "| experiment | expected verdict | hits | target | met |", "| --- | --- | --- | --- | --- |"]
    md += [f"| {k} | {v['expected']} | {v['hits']}/{v['pairs']} | {v['target']} | {'yes' if v['met'] else 'NO'} |"
           for k, v in results.items()]
    atomic_write_text(a.out / "noise_targets.md", "\n".join(md) + "\n")
    return code


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
