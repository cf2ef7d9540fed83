"""`python -m zoo ab`: two configurations of one model timed side by side, in one process.

    python -m zoo ab --model unetpp --base onnxruntime --candidate openvino:int8 [--batch-sizes 1] [run options]

Separate runs of a shared machine differ by more than their own intervals (other work comes and
goes between them): on a 2-core machine two identical UNet++ runs compared 1.45-1.99x apart.
Interleaving cancels that: both configurations (the base A and the candidate B) are compiled in one process on the same weights,
ONNX export and input batch, and timed in alternating windows (zoo.pipeline.interleaved, ABBA
order). The figure is B's throughput over A's with its 95% interval; the verdict is

  faster / slower: the interval excludes 1 and the ratio is beyond --min-effect (default 2%);
  no significant change: otherwise.

`--fail-slower X` makes it a gate: exit 1 when B is slower by more than X (significantly);
`--expect faster|slower|same` one that exits 1 unless the verdict is that (e.g. CI: an int8 model
must be significantly faster than its fp32 one; "same" = no significant change).
Each side is RUNTIME[:PRECISION]; both are verified against PyTorch on the verify batch first
(a side that fails is named, and the comparison is still printed, marked INVALID). The JSON
(kind zoo.ab) is written atomically under <--out>/ab (results/ab by default). --time-budget is
per side (the interleaved timing stops at twice it)."""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from zoo.errors import ZooError

VERDICTS = ("faster", "slower", "no significant change")


def verdict(ratio: float, low: float | None, high: float | None, min_effect: float) -> str:
    """faster / slower when the interval excludes 1 and the ratio is beyond the practical floor
    `min_effect` (relative), else no significant change (an interval-less figure judges nothing)."""
    if low is None or high is None:
        return "no significant change"
    if high < 1 and ratio < 1 - min_effect:
        return "slower"
    if low > 1 and ratio > 1 + min_effect:
        return "faster"
    return "no significant change"


def side(text: str) -> tuple[str, str]:
    """RUNTIME[:PRECISION] -> (runtime, precision); precision fp32 by default."""
    runtime, _, precision = text.partition(":")
    if not runtime.strip():
        raise ZooError(f"--base/--candidate must be RUNTIME[:PRECISION], got {text!r}")
    return runtime.strip(), (precision.strip() or "fp32")


EXPECT = {"faster": "faster", "slower": "slower", "same": "no significant change"}


def check(cfg, a: str, b: str, min_effect: float, fail_slower: float | None, expect: str | None = None) -> None:
    if expect is not None and expect not in EXPECT:
        raise ZooError(f"--expect must be one of {', '.join(EXPECT)}, got {expect!r}")
    for name, value in (("--min-effect", min_effect), ("--fail-slower", fail_slower)):
        if value is not None and not 0 <= value < 1:
            raise ZooError(f"{name} must be >= 0 and < 1, got {value}")
    if cfg.batch_sizes and len(cfg.batch_sizes) != 1:
        raise ZooError(f"ab times one batch size, got --batch-sizes {','.join(map(str, cfg.batch_sizes))}")
    for field, flag in (("isolate", "--isolate"), ("save_predictions", "--save-predictions"), ("profile", "--profile")):
        if getattr(cfg, field):
            raise ZooError(f"{flag} does not apply to ab (it times inference only)")


def run_ab(cfg, a: str, b: str, out: Path, min_effect: float = 0.02, fail_slower: float | None = None,
           expect: str | None = None) -> tuple[dict, Path]:
    """(the zoo.ab record, its path)."""
    from zoo.datasets import open_source
    from zoo.paths import cache_dir
    from zoo.pipeline import interleaved
    from zoo.stages import log
    from zoo.stages.compile import calibration_for, compile_runtime
    from zoo.stages.config import check_config
    from zoo.stages.export import export_model, torch_outputs, verify_reference
    from zoo.stages.infer import cycled, infer_feed
    from zoo.stages.verify import verify_runtime
    from zoo.stages.weights import load_model

    check(cfg, a, b, min_effect, fail_slower, expect)
    cfgs = {k: dataclasses.replace(cfg, runtime=r, precision=p) for k, (r, p) in (("a", side(a)), ("b", side(b)))}
    checked = {k: check_config(c) for k, c in cfgs.items()}  # both sides' options before any work
    manifest, _, adapter = checked["a"]
    bs = (cfg.batch_sizes or [1])[0]
    cache = cache_dir()
    t_start = time.time()
    log(f"[1/4] weights, dataset, export ({manifest.name})")
    weights, module = load_model(cfgs["a"], manifest, adapter)
    source = open_source(manifest, cfg.data, cfg.ids_file, cfg.limit, cache)
    adapter.check_source(source)
    vbs = manifest.verify["batch_size"]
    loaded = [adapter.preprocess(source.read(i)) for i in source.ids[:max(bs, vbs)]]
    head = [x for x, _ in loaded]
    batch, metas = np.stack(cycled(head, vbs)), cycled([m for _, m in loaded], vbs)
    reference = torch_outputs(module, batch)
    export = export_model(cfgs["a"], manifest, adapter, module, weights, batch, metas, reference, cache)
    expected, label = verify_reference(export, reference, batch, manifest)
    inp, outp = manifest.input["name"], manifest.output["name"]
    rts, verified = {}, {}
    try:
        for k, c in cfgs.items():
            cls = checked[k][1]
            log(f"[{2 if k == 'a' else 3}/4] {k.upper()}: compile and verify {c.runtime} {c.precision}")
            calibration = calibration_for(c, cls, manifest, adapter, cache)
            rts[k] = compile_runtime(c, cls, manifest, export, module, cache, calibration)
            verified[k] = verify_runtime(rts[k], expected, batch, adapter, metas, manifest, inp, outp, c.precision,
                                         label)
            log(f"      max_rel_diff={verified[k]['max_rel_diff']:.2e}, passed={verified[k]['passed']}")
        feed, desc = infer_feed(cfg.infer_input, head, bs)
        settings = cfg.timing
        log(f"[4/4] interleaved timing, bs{bs}: windows of about 0.5 s, until +-{settings.tolerance:.1%} "
            f"or {cfg.time_budget:g} s")
        res = interleaved(rts["a"], {inp: feed}, rts["b"], {inp: feed}, bs, cfg.warmup, settings, cfg.time_budget * 2,
                          max_rounds=max(cfg.iterations // max(settings.window, 1), 1))
        names = {k: f"{rts[k].name} {rts[k].executed_precision()}" for k in rts}
    finally:
        for rt in rts.values():
            rt.close()
    judged = verdict(res["ratio"], res["low"], res["high"], min_effect)
    drop = 1 - res["ratio"]
    gate = (fail_slower is not None and judged == "slower" and drop > fail_slower) or \
        (expect is not None and judged != EXPECT[expect])
    rec = {"kind": "zoo.ab", "model": manifest.name, "batch_size": bs, "input": desc,
           "base": {"config": a, "runtime": names["a"], "verify_passed": bool(verified["a"]["passed"]), **res["a"]},
           "candidate": {"config": b, "runtime": names["b"], "verify_passed": bool(verified["b"]["passed"]),
                         **res["b"]},
           "ratio": res["ratio"], "low": res["low"], "high": res["high"], "half_width": res["half_width"],
           "rounds": res["rounds"], "stable": res["stable"], "reason": res["reason"], "method": res["method"],
           "verdict": judged, "min_effect": min_effect, "fail_slower": fail_slower, "expect": expect, "gate_failed": gate,
           "device": _device(cfgs["a"].threads), "started": t_start, "seconds": time.time() - t_start}
    from zoo.fileutil import create_unique_json
    from zoo.stages.record import stamp
    rec["run_id"] = f"{manifest.name}-ab-{a.replace(':', '-')}-vs-{b.replace(':', '-')}-{stamp(t_start)}"
    path = create_unique_json(Path(out), rec, "run_id")
    return rec, path


def _device(threads: int | None) -> dict:
    from zoo.envinfo import cpu_isa, cpu_name
    from zoo.runtimes.base import default_threads
    return {"cpu": cpu_name(), "isa": list(cpu_isa()), "threads": threads or default_threads()}


def lines(rec: dict, path) -> list[str]:
    """The A/B result for the terminal."""
    iv = f"[{rec['low']:.3f}, {rec['high']:.3f}]" if rec["low"] is not None else "(no interval)"
    base, cand = rec["base"], rec["candidate"]
    out = [f"A/B {rec['model']} bs{rec['batch_size']}: base {base['runtime']}, candidate {cand['runtime']}",
           f"  base {base['throughput']:.1f}/s, candidate {cand['throughput']:.1f}/s over {rec['rounds']} "
           "interleaved rounds",
           f"  candidate/base throughput x{rec['ratio']:.3f} {iv} (95%): {rec['verdict'].upper()}"
           + ("" if rec["stable"] else f"; UNSTABLE: {rec['reason']}")]
    for k in ("base", "candidate"):
        if not rec[k]["verify_passed"]:
            out.append(f"INVALID: the {k} ({rec[k]['runtime']}) failed verify against PyTorch")
    if rec["gate_failed"] and rec.get("expect") and rec["verdict"] != EXPECT[rec["expect"]]:
        out.append(f"GATE: expected {EXPECT[rec['expect']]}, measured {rec['verdict']}")
    elif rec["gate_failed"]:
        out.append(f"GATE: the candidate is slower by {1 - rec['ratio']:.1%}, more than --fail-slower "
                   f"{rec['fail_slower']:.0%}")
    out.append(f"result: {path}")
    return out


def main(args, typed: set[str]) -> int:
    """`typed`: the declared options the command line gives (zoo.cli.typed_fields of its argv)."""
    from zoo.stages.config import from_namespace
    if "precision" in typed:
        raise ZooError("--precision does not apply to ab: give each side's, e.g. --candidate openvino:int8")
    cfg = from_namespace(args)
    rec, path = run_ab(cfg, args.base, args.candidate, Path(cfg.out) / "ab", args.min_effect, args.fail_slower, args.expect)
    print("\n".join(lines(rec, path)), file=sys.stderr)
    print(path)
    return 1 if rec["gate_failed"] else 0

