"""Issue 15's targets, measured side by side in one run of this script:

1. local: the single-process run (the machine's threads, `--threads` default) and the same run with
   `--shards 2 --cluster local` (two 1-thread shards on a local Ray cluster), in alternating
   rounds (round r runs each once; the best pipeline throughput of each is kept): accuracy must be
   identical to the last digit, and the sharded aggregate throughput at least --target (0.85) of
   the single-process figure at the same batch size.
2. two-node (`--two-node`): a Ray cluster of two nodes on this machine, started here (`ray start
   --head` and a second `ray start --address`, tests/raynodes.py RayNodes), each node with
   `--node-npus` fake NPUs (custom resources; the CPU runtime ignores them) and --node-cpus CPUs;
   the run `--cluster ray://HEAD --shard-resource NPU --shards <all NPUs>` must place the shards on
   both nodes by NPU, one per device, and give the identical accuracy. The nodes are stopped at
   the end (only the processes started here).

Every run is the zoo's CLI in a subprocess (`python -m zoo run`), its record kept in --out. The
table and a JSON summary are printed and written to --out; the CPU's ISA flags are printed too.

    PYTHONPATH=. .venvs/unetpp/bin/python benchmarks/sharding.py --model unetpp \\
        --data ../shared/datasets/dsb2018 --ids-file models/unetpp/val_ids.txt --batch-size 16 --two-node
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def zoo_run(args: argparse.Namespace, out: Path, *extra: str) -> dict:
    """One `python -m zoo run`; its record (a failed run stops the script with its last line)."""
    argv = [sys.executable, "-m", "zoo", "run", "--model", args.model, "--batch-sizes", str(args.batch_size),
            "--no-peak", "--out", str(out), *extra]
    if args.data:
        argv += ["--data", str(args.data)]
    if args.ids_file:
        argv += ["--ids-file", str(args.ids_file)]
    if args.weights:
        argv += ["--weights", str(args.weights)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        sys.exit(f"error: {' '.join(argv[3:])}: {last}")
    rec = json.loads(Path(proc.stdout.strip().splitlines()[-1]).read_text())
    rec["_wall"] = time.monotonic() - t
    return rec


def pipeline(rec: dict, bs: int) -> dict:
    return next(p for p in rec["perf"] if p["scope"] == "pipeline" and p["batch_size"] == bs)


def figures(rec: dict) -> list:
    return [(a["name"], a["value"], a["metrics"]) for a in rec["accuracy"]]


def local_rounds(args, out: Path) -> dict:
    single, sharded = [], []
    for r in range(args.rounds):
        print(f"== round {r + 1}/{args.rounds}: single process", flush=True)
        single.append(zoo_run(args, out))
        print(f"== round {r + 1}/{args.rounds}: --shards 2 --cluster local", flush=True)
        sharded.append(zoo_run(args, out, "--shards", "2", "--cluster", "local", "--threads", "1"))
    bs = args.batch_size
    best_single = max(single, key=lambda rec: pipeline(rec, bs)["throughput"])
    best_sharded = max(sharded, key=lambda rec: pipeline(rec, bs)["throughput"])
    s_tp, p_tp = pipeline(best_single, bs)["throughput"], pipeline(best_sharded, bs)["throughput"]
    identical = all(figures(rec) == figures(single[0]) for rec in single + sharded)
    return {"batch_size": bs, "samples": best_single["provenance"]["dataset"]["num_samples"],
            "single_throughputs": [pipeline(rec, bs)["throughput"] for rec in single],
            "sharded_throughputs": [pipeline(rec, bs)["throughput"] for rec in sharded],
            "single_threads": best_single["runtime"]["settings"].get("threads"),
            "per_shard": pipeline(best_sharded, bs)["shards"], "ratio": p_tp / s_tp, "target": args.target,
            "ratio_met": p_tp / s_tp >= args.target, "accuracy_identical": identical,
            "accuracy": figures(single[0]), "scaling_in_record": best_sharded["sharding"]["scaling"],
            "startup_s": best_sharded["sharding"]["startup_s"],
            "wall_s": {"single": best_single["_wall"], "sharded": best_sharded["_wall"]}}


def two_node(args, out: Path, reference: list) -> dict:
    """A two-node cluster on this machine (tests/raynodes.py RayNodes: each node --node-npus NPUs and
    --node-cpus CPUs, stopped at the end), joined through Ray Client; one shard per NPU."""
    from tests.raynodes import RayNodes
    ray_cli = str(Path(sys.executable).with_name("ray"))
    node = {"cpus": args.node_cpus, "resources": {"NPU": args.node_npus}}
    shards = 2 * args.node_npus
    with RayNodes(ray_cli, [node, node]) as cluster:
        print(f"== two-node cluster {cluster.client}: --shards {shards} --shard-resource NPU", flush=True)
        rec = zoo_run(args, out, "--shards", str(shards), "--cluster", cluster.client, "--shard-resource", "NPU",
                      "--devices", ",".join(str(i) for i in range(args.node_npus)), "--threads", "1",
                      "--no-scaling-reference")
        address = cluster.client
    sh = rec["sharding"]
    nodes = {s["node_id"] for s in sh["shards"]}
    per_node = {n: sorted(s["environment"].get("ASCEND_RT_VISIBLE_DEVICES", "") for s in sh["shards"]
                          if s["node_id"] == n) for n in nodes}
    return {"address": address, "shards": shards, "nodes_in_cluster": len(sh["cluster"]["nodes"]),
            "nodes_used": len(nodes), "devices_per_node": per_node,
            "one_device_each": all(v == [str(i) for i in range(args.node_npus)] for v in per_node.values()),
            "accuracy_identical": figures(rec) == reference,
            "throughput": pipeline(rec, args.batch_size)["throughput"]}


def isa() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="unetpp")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--ids-file", type=Path)
    ap.add_argument("--weights")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--target", type=float, default=0.85)
    ap.add_argument("--two-node", action="store_true")
    ap.add_argument("--node-npus", type=int, default=2)
    ap.add_argument("--node-cpus", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "work" / "bench-sharding")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {os.cpu_count()} cores visible, ISA: {isa()}", flush=True)
    summary = {"model": args.model, "isa": isa(), "local": local_rounds(args, args.out)}
    loc = summary["local"]
    if args.two_node:
        summary["two_node"] = two_node(args, args.out, loc["accuracy"])
    print()
    print(f"| {args.model}, {loc['samples']} samples, bs{loc['batch_size']} | pipeline samples/s | accuracy |")
    print("|---|---|---|")
    print(f"| single process, {loc['single_threads']} threads | {max(loc['single_throughputs']):.1f} "
          f"(rounds: {', '.join(f'{t:.1f}' for t in loc['single_throughputs'])}) | {loc['accuracy'][0][1]:.6f} |")
    print(f"| --shards 2 --cluster local, 1 thread each | {max(loc['sharded_throughputs']):.1f} "
          f"(rounds: {', '.join(f'{t:.1f}' for t in loc['sharded_throughputs'])}) | "
          f"{'identical' if loc['accuracy_identical'] else 'DIFFERENT'} |")
    print(f"\nsharded / single = {loc['ratio']:.3f} (target >= {args.target}: "
          f"{'met' if loc['ratio_met'] else 'NOT met'}); actor start-up {loc['startup_s']:.1f} s; "
          f"record's scaling efficiency vs one shard: {loc['scaling_in_record']['efficiency']:.3f}")
    if args.two_node:
        tn = summary["two_node"]
        print(f"two-node cluster {tn['address']}: {tn['shards']} shards on {tn['nodes_used']} of "
              f"{tn['nodes_in_cluster']} nodes, devices per node {list(tn['devices_per_node'].values())}, "
              f"accuracy {'identical' if tn['accuracy_identical'] else 'DIFFERENT'}")
    path = args.out / "sharding_summary.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, path)
    print(f"summary: {path}")
    ok = loc["accuracy_identical"] and (not args.two_node or (summary["two_node"]["accuracy_identical"]
                                                              and summary["two_node"]["one_device_each"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
