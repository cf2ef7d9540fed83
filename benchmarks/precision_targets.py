"""Issue 13's targets, measured side by side in one run: each runtime:precision of one model at one
batch size, against fp32 ONNX Runtime.

For every configuration (default: onnxruntime:fp32, onnxruntime:int8, openvino:fp32,
openvino:bf16, openvino:int8; one a runtime or this CPU cannot run is listed and skipped):

1. the zoo's own run (zoo.run.run: verify against PyTorch, the whole split through the pipeline,
   accuracy, and for a reduced precision its fp32 baseline, delta and fidelity), its record kept
   in --out;
2. then every configuration's compiled model is timed infer-only on the same resident batch, in
   interleaved rounds (round r times every configuration once, `--seconds` each), best round
   kept: ratios from one run on one machine state, never from figures of different runs.

It prints the table (throughput, speed-up over onnxruntime:fp32, accuracy, delta vs fp32,
fidelity, verify, target verdict), the CPU's ISA flags (the targets assume AMX: without
amx_bf16/amx_int8 they are reported but not expected), and writes the same as JSON in --out.

    PYTHONPATH=. .venvs/unetpp/bin/python benchmarks/precision_targets.py --model unetpp \\
        --data ../shared/datasets/dsb2018 --ids-file models/unetpp/val_ids.txt --batch-size 16
    PYTHONPATH=. .venvs/erfnet/bin/python benchmarks/precision_targets.py --model erfnet \\
        --weights W.pth --calib-from-eval --batch-size 1

Targets (issue 13): UNet++ best reduced precision >= 5x and guide IoU >= 0.8285 on the full
134-image val split; ErfNet, FCN-8s, NAS-FPN >= 3x; Fast-SCNN >= 1.5x; each within 1% of fp32
(accuracy delta with a trained checkpoint, fidelity to fp32 otherwise)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zoo.errors import ZooError  # noqa: E402

DEFAULT_CONFIGS = "onnxruntime:fp32,onnxruntime:int8,openvino:fp32,openvino:bf16,openvino:int8"
TARGET_SPEEDUP = {"unetpp": 5.0, "erfnet": 3.0, "fcn8s": 3.0, "nasfpn": 3.0, "fastscnn": 1.5}
UNETPP_MIN_GUIDE_IOU = 0.8285  # 0.8369 (the real checkpoint's fp32 guide IoU on val) minus 1%


def parse_configs(text: str) -> list[tuple[str, str]]:
    out = []
    for item in text.split(","):
        if not item.strip():
            continue
        runtime, _, precision = item.strip().partition(":")
        out.append((runtime, precision or "fp32"))
    if ("onnxruntime", "fp32") not in out:
        out.insert(0, ("onnxruntime", "fp32"))  # the reference every ratio is taken against
    return out


def run_config(base: dict, runtime: str, precision: str):
    """The zoo's run of one configuration: (RunConfig, record) or (None, why it cannot run)."""
    from zoo.run import run
    from zoo.stages.config import RunConfig, check_config
    cfg = RunConfig(**{**base, "runtime": runtime, "precision": precision})
    try:
        check_config(cfg)
        path = run(cfg)
    except ZooError as exc:
        return None, str(exc)
    return cfg, json.loads(Path(path).read_text())


def compiled_runtime(cfg, batch_size: int):
    """The configuration's compiled, loaded runtime and a resident batch of real samples, through the
    run's own stages (the export and the quantized model come from the cache the run filled)."""
    from zoo.datasets import open_source
    from zoo.paths import cache_dir
    from zoo.stages.compile import calibration_for, compile_runtime
    from zoo.stages.config import check_config
    from zoo.stages.export import export_model, torch_outputs
    from zoo.stages.infer import cycled
    from zoo.stages.weights import load_model
    manifest, runtime_cls, adapter = check_config(cfg)
    cache = cache_dir()
    weights, module = load_model(cfg, manifest, adapter)
    source = open_source(manifest, cfg.data, cfg.ids_file, cfg.limit, cache)
    loaded = [adapter.preprocess(source.read(i)) for i in source.ids[:batch_size]]
    batch = np.stack(cycled([x for x, _ in loaded], batch_size))
    metas = cycled([m for _, m in loaded], batch_size)
    export = export_model(cfg, manifest, adapter, module, weights, batch, metas, torch_outputs(module, batch), cache)
    calibration = calibration_for(cfg, runtime_cls, manifest, adapter, cache)
    rt = compile_runtime(cfg, runtime_cls, manifest, export, module, cache, calibration)
    return rt, {manifest.input["name"]: batch}


def timed(rt, feeds: dict, seconds: float) -> float:
    """Samples per second of back-to-back infer calls for about `seconds` (after one warm-up call)."""
    rt.infer(feeds)
    bs = next(iter(feeds.values())).shape[0]
    calls, t0 = 0, time.perf_counter()
    while True:
        rt.infer(feeds)
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and calls >= 2:
            return calls * bs / elapsed


def summary(record: dict) -> dict:
    """What the table shows of a record."""
    acc = record["accuracy"][0]
    rp = record.get("reduced_precision") or {}
    delta = next((d for d in rp.get("delta", []) if d["name"] == acc["name"]), None)
    fidelity = next(iter(rp.get("fidelity", [])), None)
    return {"run_id": record["run_id"], "executed": record["precision"], "protocol": acc["name"],
            "metric": acc["metric"], "accuracy": acc["value"], "complete_split": record["provenance"]["dataset"]
            ["expected_samples"] is not None, "verify_passed": record["verify"]["passed"],
            "delta": delta["delta"] if delta else None, "relative_drop": delta["relative_drop"] if delta else None,
            "fidelity": fidelity["value"] if fidelity else None, "fidelity_metric": fidelity["metric"] if fidelity else None,
            "reduced_precision_passed": rp.get("passed"), "criterion": rp.get("criterion"),
            "calibration": rp.get("calibration")}


def verdict(model: str, row: dict, speedup: float | None) -> str:
    if row["executed"] == "fp32" or speedup is None:
        return ""
    ok_speed = speedup >= TARGET_SPEEDUP.get(model, 1.0)
    if model == "unetpp" and row["protocol"] == "guide" and row["complete_split"]:
        ok_acc = row["accuracy"] >= UNETPP_MIN_GUIDE_IOU
    else:
        ok_acc = bool(row["reduced_precision_passed"])
    return f"{'speed ok' if ok_speed else 'speed below'} {TARGET_SPEEDUP.get(model, 1.0):g}x, " \
           f"{'accuracy ok' if ok_acc else 'accuracy FAILS'} ({row['criterion'] or 'guide IoU'})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"runtime:precision list (default {DEFAULT_CONFIGS})")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per configuration and round")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--ids-file", type=Path)
    ap.add_argument("--weights")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--calib-from-eval", action="store_true")
    ap.add_argument("--calib-size", type=int, default=32)
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, default=Path("results/precision_targets"))
    args = ap.parse_args(argv)

    from zoo.envinfo import cpu_isa, cpu_name
    from zoo.fileutil import atomic_write_text
    isa = cpu_isa()
    amx = {"amx_bf16", "amx_int8"} <= set(isa)
    print(f"CPU: {cpu_name()}; ISA: {', '.join(isa)}; AMX {'present' if amx else 'ABSENT (targets assume AMX)'}",
          flush=True)
    base = {"model": args.model, "data": args.data, "ids_file": args.ids_file, "weights": args.weights,
            "batch_sizes": [args.batch_size], "limit": args.limit, "threads": args.threads,
            "calib_from_eval": args.calib_from_eval, "calib_size": args.calib_size,
            "options": dict(o.split("=", 1) for o in args.option), "out": args.out, "measure_peak": False}
    rows, runtimes, skipped = {}, {}, {}
    try:
        for runtime, precision in parse_configs(args.configs):
            label = f"{runtime}:{precision}"
            print(f"== run {label}", flush=True)
            cfg, rec = run_config(base, runtime, precision)
            if cfg is None:
                skipped[label] = rec
                print(f"   skipped: {rec}", flush=True)
                continue
            rows[label] = summary(rec)
            runtimes[label] = compiled_runtime(cfg, args.batch_size)
        if "onnxruntime:fp32" not in runtimes:
            print(f"error: the reference onnxruntime:fp32 did not run: {skipped.get('onnxruntime:fp32')}", file=sys.stderr)
            return 2
        best = {label: 0.0 for label in runtimes}
        for r in range(args.rounds):
            for label, (rt, feeds) in runtimes.items():
                best[label] = max(best[label], timed(rt, feeds, args.seconds))
            print(f"   round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v:.1f}/s" for k, v in best.items()), flush=True)
    finally:
        for rt, _ in runtimes.values():
            rt.close()

    ref = best["onnxruntime:fp32"]
    print(f"\n{args.model}, batch {args.batch_size}, best of {args.rounds} interleaved rounds of {args.seconds:g} s:")
    header = ["config", "executed", "samples/s", "x ORT fp32", "accuracy", "delta vs fp32", "fidelity", "verify", "target"]
    lines = []
    for label, row in rows.items():
        speedup = best[label] / ref if label in best else None
        row.update(throughput=best.get(label), speedup_vs_onnxruntime_fp32=speedup,
                   target=verdict(args.model, row, speedup))
        lines.append([label, row["executed"], f"{best[label]:.1f}", f"{speedup:.2f}",
                      f"{row['protocol']} {row['metric']} {row['accuracy']:.4f}",
                      "" if row["delta"] is None else f"{row['delta']:+.4f} ({row['relative_drop']:.2%} drop)",
                      "" if row["fidelity"] is None else f"{row['fidelity_metric']} {row['fidelity']:.4f}",
                      "passed" if row["verify_passed"] else "FAILED", row["target"]])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    for line in [header, *lines]:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    for label, why in skipped.items():
        print(f"skipped {label}: {why}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"precision_targets-{args.model}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    atomic_write_text(out, json.dumps({"model": args.model, "cpu": cpu_name(), "isa": isa, "amx": amx,
                                       "batch_size": args.batch_size, "rounds": args.rounds, "seconds": args.seconds,
                                       "rows": rows, "skipped": skipped}, indent=1, default=str) + "\n")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
