"""How close to this machine's fp32 limit does each model run? Every model, every CPU runtime,
side by side in one go.

For each model: `python -m zoo bench --backends torch,onnxruntime,openvino --input random` in the
model's environment (random-weight checkpoints from random_weights.py where no checkpoint ships;
a full-size synthetic Cityscapes tree for Fast-SCNN and ErfNet). Every run measures the fp32 GEMM
peak before each batch size (`perf[].peak_gflops`); a model's fraction of the peak is taken
against the highest reading of ALL its runs in this side-by-side (every runtime), so a runtime
timed in a slow moment is not flattered by its own low readings (its own figure is shown too). Prints, per model and runtime, the best batch size, samples/s, achieved GFLOP/s,
the fraction of the peak, the ratio to PyTorch eager, and the verdict against `--target` (0.8) for
the compute-bound models; Fast-SCNN (depthwise layers) is also read against the memory-copy
bandwidth. Writes peak_fraction.md / .json into --out. Exit 0 when every compute-bound model's
best runtime reaches the target, 1 otherwise, 2 when a run fails.

    python3 benchmarks/peak_fraction.py                       # all five (about 40 min here)
    python3 benchmarks/peak_fraction.py --cityscapes work/bench/cityscapes16 -- --profile 3
    python3 benchmarks/peak_fraction.py --models unetpp,fcn8s --backends onnxruntime,openvino
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COMPUTE_BOUND = ["unetpp", "erfnet", "fcn8s", "nasfpn"]
BATCH_SIZES = {"unetpp": "1,8,32", "erfnet": "1,2,4", "fastscnn": "1,2", "fcn8s": "1,2,4", "nasfpn": "1,2"}
SHIPS_WEIGHTS = {"unetpp"}
CITYSCAPES = {"erfnet", "fastscnn"}


def python_of(model: str) -> str:
    """The model's environment, created or brought up to date first (as `invoke setup`)."""
    from runner import envs
    return str(envs.ensure(model))


def env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def ensure_weights(model: str, work: Path) -> Path | None:
    if model in SHIPS_WEIGHTS:
        return None
    path = work / f"{model}_random.pth"
    if not path.exists():
        subprocess.run([python_of(model), str(ROOT / "benchmarks" / "random_weights.py"), model, str(path)],
                       cwd=ROOT, env=env(), check=True, stdout=sys.stderr)
    return path


def ensure_cityscapes(work: Path, tree: Path | None = None) -> Path:
    """The Cityscapes tree ErfNet and Fast-SCNN run on: `tree` (--cityscapes) or a 4-image
    full-size synthetic one generated into `work` (a longer tree gives steadier pipeline figures:
    `cityscapes_memory.py --sizes 16 --generate-only DIR`)."""
    if tree is not None:
        if not (Path(tree) / "leftImg8bit").is_dir():
            raise RuntimeError(f"{tree}: not a Cityscapes tree (no leftImg8bit/)")
        return Path(tree)
    tree = work / "cityscapes_full"
    if not (tree / "leftImg8bit").is_dir():
        subprocess.run([python_of("fastscnn"), str(ROOT / "benchmarks" / "cityscapes_memory.py"),
                        "--sizes", "2,4", "--generate-only", str(tree)], cwd=ROOT, env=env(), check=True,
                       stdout=sys.stderr)
    return tree


def bench(model: str, backends: str, sizes: str, work: Path, out: Path, extra: list[str],
          cityscapes: Path | None = None) -> list[dict]:
    args = [python_of(model), "-m", "zoo", "bench", "--model", model, "--backends", backends,
            "--batch-sizes", sizes, "--input", "random", "--out", str(out), *extra]
    weights = ensure_weights(model, work)
    if weights:
        args += ["--weights", str(weights)]
    if model in CITYSCAPES:
        args += ["--data", str(ensure_cityscapes(work, cityscapes))]
    print(f"== {model}: {' '.join(args[1:])}", file=sys.stderr, flush=True)
    proc = subprocess.run(args, cwd=ROOT, env=env(), stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{model}: zoo bench failed (exit {proc.returncode})")
    print(proc.stdout, file=sys.stderr)
    paths = [ln for ln in proc.stdout.splitlines() if ln.endswith(".json")]
    return [json.loads(Path(p).read_text()) for p in paths]


def best_rows(model: str, records: list[dict], target: float) -> list[dict]:
    rows = []
    by_rt = {}
    for rec in records:
        ok = [p for p in rec["perf"] if p["scope"] == "infer_only" and p["status"] == "ok"]
        if ok:
            by_rt[rec["runtime"]["name"]] = (rec, max(ok, key=lambda p: p["throughput"]))
    torch_tp = by_rt["torch"][1]["throughput"] if "torch" in by_rt else None

    def readings(rec):
        peak = rec["device"].get("fp32_peak") or {}
        return peak.get("measurements") or ([peak["gflops"]] if peak else [])

    # The side-by-side's peak: the highest GEMM reading of ALL this model's runs (every runtime),
    # so a runtime timed in a slow moment is not flattered by its own low readings.
    side_by_side = max((g for rec, _ in by_rt.values() for g in readings(rec)), default=None)
    for name, (rec, p) in by_rt.items():
        peak = rec["device"].get("fp32_peak") or {}
        seen = readings(rec)
        rows.append({"model": model, "runtime": name, "batch_size": p["batch_size"], "throughput": p["throughput"],
                     "gflops": p.get("gflops"), "peak_gflops": side_by_side,
                     "peak_range": [min(seen), max(seen)] if seen else None,
                     "peak_fraction": _fraction(p.get("gflops"), side_by_side),
                     "own_peak_fraction": p["peak_fraction"] if "peak_fraction" in p else
                     _fraction(p.get("gflops"), peak.get("gflops")), "peak_note": p.get("peak_note"),
                     "bandwidth_fraction": p.get("bandwidth_fraction"),
                     "vs_torch": p["throughput"] / torch_tp if torch_tp else None,
                     "stopped_by": p.get("stopped_by"), **uncertainty(p),
                     "gflop_per_sample": rec["export"].get("cost", {}).get("flops_per_sample", 0) / 1e9,
                     **pipeline_at(rec, p["batch_size"]), "top_ops": top_ops(p)})
    best = max(rows, key=lambda r: r["peak_fraction"] or 0) if rows else None
    for r in rows:
        r["best"] = r is best
        r["verdict"] = (("reaches" if (r["peak_fraction"] or 0) >= target else "below") if model in COMPUTE_BOUND
                        else "bandwidth-bound: see bandwidth fraction") if r is best else ""
    return rows


def _fraction(gflops: float | None, peak: float | None) -> float | None:
    """gflops / peak, never above 1: a model that beats the peak shows that the peak measurement is
    incomplete (zoo.peaks), not a fraction above 100%."""
    if not gflops or not peak or gflops > peak:
        return None
    return gflops / peak


def uncertainty(block: dict) -> dict:
    """How sure the throughput is: the relative half-width of its 95% interval and whether it is
    stable (`interval`, schema 1.11); an older record's stop-when-stable window spread (`stability`)
    when it has no interval."""
    iv, st = block.get("interval"), block.get("stability") or {}
    if iv:
        return {"half_width": iv.get("half_width"), "stable": iv.get("stable"), "spread": None}
    return {"half_width": None, "stable": st.get("stable"), "spread": st.get("spread")}


def shown_uncertainty(r: dict) -> str:
    """'+-1.1%', 'spread 3%' (before 1.11), '-' (neither); ' UNSTABLE' when not stable."""
    text = (f"+-{r['half_width']:.1%}" if r.get("half_width") is not None else
            f"spread {r['spread']:.0%}" if r.get("spread") is not None else "-")
    return text + (" UNSTABLE" if r.get("stable") is False else "")


def pipeline_at(rec: dict, bs: int) -> dict:
    """The pipeline's figures at the same batch size: pipeline/infer and its CPU-bound ceiling."""
    pipe = next((p for p in rec["perf"] if p["scope"] == "pipeline" and p["status"] == "ok"
                 and p["batch_size"] == bs), None)
    if pipe is None:
        return {"pipeline_vs_infer": None, "cpu_ceiling": None}
    ceiling = (pipe.get("cpu") or {}).get("ceiling") or {}
    return {"pipeline_vs_infer": pipe.get("pipeline_vs_infer"), "cpu_ceiling": ceiling.get("vs_infer")}


def top_ops(block: dict, n: int = 3) -> str:
    """'Conv 80% 204 GFLOP/s, Reorder 10%, ...' from an --profile run (empty without one)."""
    ops = (block.get("op_profile") or {}).get("ops") or []
    return ", ".join(f"{o['op_type']} {o['share']:.0%}" + (f" {o['gflops']:.0f} GFLOP/s" if "gflops" in o else "")
                     for o in ops[:n])


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(rows: list[dict], target: float) -> str:
    lines = [f"| model | runtime | best bs | samples/s | GFLOP/sample | GFLOP/s | GEMM peak (this runtime's readings) "
             f"| of peak (of its own readings' highest) "
             f"| of copy bandwidth | vs PyTorch | stopped by (95% interval or spread) | target {target:.0%} "
             f"| pipeline/infer (CPU ceiling) | top operators (--profile) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['runtime']} | {r['batch_size']} | {r['throughput']:.2f} | "
                     f"{r['gflop_per_sample']:.1f} | {fmt(r['gflops'], '.0f')} | {fmt(r['peak_gflops'], '.0f')}"
                     f"{' (%.0f-%.0f)' % tuple(r['peak_range']) if r['peak_range'] else ''} | "
                     f"{fmt(r['peak_fraction'], '.0%')} ({fmt(r.get('own_peak_fraction'), '.0%')}) | "
                     f"{fmt(r['bandwidth_fraction'], '.0%')} | "
                     f"{fmt(r['vs_torch'], '.2f')} | {r['stopped_by']} ({shown_uncertainty(r)}) | {r['verdict']} | "
                     f"{fmt(r.get('pipeline_vs_infer'), '.0%')} ({fmt(r.get('cpu_ceiling'), '.0%')}) | "
                     f"{r.get('top_ops') or '-'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="unetpp,erfnet,fcn8s,nasfpn,fastscnn")
    ap.add_argument("--backends", default="torch,onnxruntime,openvino")
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--work", type=Path, default=ROOT / "work" / "bench", help="random checkpoints, synthetic data")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "peak_fraction")
    ap.add_argument("--batch-sizes", action="append", default=[], metavar="MODEL=1,2,4",
                    help="override a model's batch sizes")
    ap.add_argument("--cityscapes", type=Path, help="Cityscapes tree for ErfNet/Fast-SCNN (default: 4 synthetic "
                                                     "full-size images generated into --work)")
    ap.add_argument("--summarize", action="store_true",
                    help="run nothing: the table from the newest records already in --out")
    ap.add_argument("extra", nargs="*", help="after --: arguments for zoo bench (e.g. --time-budget 30)")
    a = ap.parse_args(argv)
    sizes = dict(BATCH_SIZES, **dict(s.split("=", 1) for s in a.batch_sizes))
    a.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in [m.strip() for m in a.models.split(",") if m.strip()]:
        if a.summarize:
            newest = {}
            for f in sorted((a.out / model).glob("*.json")):
                rec = json.loads(f.read_text())
                if rec.get("kind") == "zoo.result":
                    newest[rec["runtime"]["name"]] = rec  # file names sort by start time
            rows += best_rows(model, list(newest.values()), a.target)
            continue
        try:
            recs = bench(model, a.backends, sizes[model], a.work, a.out, a.extra, a.cityscapes)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        rows += best_rows(model, recs, a.target)
    md = table(rows, a.target)
    from zoo.fileutil import atomic_write_text
    atomic_write_text(a.out / "peak_fraction.md", md + "\n")
    atomic_write_text(a.out / "peak_fraction.json", json.dumps({"target": a.target, "rows": rows}, indent=1) + "\n")
    print(md)
    misses = [r["model"] for r in rows if r["best"] and r["model"] in COMPUTE_BOUND and r["verdict"] != "reaches"]
    print(f"\n{'all compute-bound models reach' if not misses else 'below'} {a.target:.0%} of the fp32 peak"
          + (f": {', '.join(misses)}" if misses else ""))
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
