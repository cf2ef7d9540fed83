"""Stage 7, score: the metrics' figures as the record's accuracy blocks (against the guide's and
the published references, the guides' 1% rule), and the same from a saved run's predictions
without inference (`python -m zoo score RESULT`, `invoke score`), as MLPerf scores its
accuracy log: the targets are read again from the dataset, the predictions from the files the
run kept, and the figures must equal the record's."""
from __future__ import annotations

import math
import sys
from pathlib import Path

from zoo.errors import ZooError
from zoo.ids import shown


def accuracy_blocks(metrics_by_bs: dict[int, list], manifest, source) -> list[dict]:
    """The record's `accuracy`: the first batch size's figures, with the spread across all."""
    ref = manifest.reference
    first_bs = next(iter(metrics_by_bs))
    subset = not source.complete
    blocks = []
    for i, m in enumerate(metrics_by_bs[first_bs]):
        figures = m.compute()
        value = float(figures[m.metric])
        spreads = [abs(float(ms[i].compute()[m.metric]) - value) for ms in metrics_by_bs.values()]
        proto = ref["protocols"].get(m.name)
        block = {"name": m.name, "description": m.description + (" [subset: not comparable to the reference]" if subset else ""),
                 "metric": m.metric, "value": value, "num_samples": int(figures.get("num_samples", len(source))),
                 "metrics": {k: (float(v) if v is not None else None) for k, v in figures.items()},
                 "per_class": m.per_class() or [],
                 "batch_size": first_bs, "consistent_across_batch_sizes": max(spreads) <= 1e-4,
                 "max_spread_across_batch_sizes": max(spreads), "reference": None, "passed": None}
        if proto:
            drop = (proto["value"] - value) / proto["value"]
            block["reference"] = {"value": proto["value"], "source": proto["source"], "delta": value - proto["value"],
                                  "relative_drop": drop, "tolerance": ref["tolerance"]}
            comparable = not subset and m.comparable is not False
            block["passed"] = bool(drop <= ref["tolerance"]) if comparable else None
        blocks.append(block)
    return blocks


def _same(a, b) -> bool:
    """Equal figures, compared deeply (per-class lists, reference blocks); NaN and None (how a
    strict JSON record keeps NaN) are the same, and so are an int and the float of it."""
    def norm(x):
        if isinstance(x, dict):
            return {k: norm(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [norm(v) for v in x]
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
    return norm(a) == norm(b)


# what `zoo score` compares per protocol: every figure a block states that its predictions make
RESCORED = ("metric", "value", "num_samples", "per_class", "passed")
REFERENCE = ("value", "source", "delta", "relative_drop", "tolerance")
# only the first batch size's predictions are kept: the spread across batch sizes cannot be
# recomputed (zoo.checks checks the two against each other instead); description is text
NOT_RESCORED = ("consistent_across_batch_sizes", "max_spread_across_batch_sizes", "description")


def _block_differences(rec: dict, new: dict) -> list[tuple]:
    """(protocol, field, recorded, re-scored) for every figure of one protocol that differs."""
    name, out = new["name"], []
    for key in RESCORED:
        if not _same(rec.get(key), new.get(key)):
            out.append((name, key, rec.get(key), new.get(key)))
    old_m, new_m = rec.get("metrics") or {}, new.get("metrics") or {}
    for key in list(new_m) + [k for k in old_m if k not in new_m]:
        if not _same(old_m.get(key, "absent"), new_m.get(key, "absent")):
            out.append((name, f"metrics.{key}", old_m.get(key, "absent"), new_m.get(key, "absent")))
    old_r, new_r = rec.get("reference"), new.get("reference")
    if (old_r is None) != (new_r is None):
        out.append((name, "reference", old_r, new_r))
    elif old_r is not None:
        for key in (k for k in REFERENCE if k in old_r or k in ("value", "source")):  # a key left out states nothing
            if not _same(old_r.get(key), new_r.get(key)):
                out.append((name, f"reference.{key}", old_r.get(key), new_r.get(key)))
    return out


def differences(recorded: list[dict], rescored: list[dict]) -> list[tuple]:
    """Every difference between the record's accuracy blocks and the re-scored ones, the set of
    protocols compared both ways."""
    old = {b["name"]: b for b in recorded}
    out = []
    for b in rescored:
        if b["name"] in old:
            out += _block_differences(old[b["name"]], b)
        else:
            out.append((b["name"], "(protocol)", "absent", "computed"))
    out += [(name, "(protocol)", "present", "not computed") for name in old if name not in {b["name"] for b in rescored}]
    return out


def rescore(result_path: Path, data: Path | None = None) -> dict:
    """{"figures": {protocol: {figure: value}}, "differences": [(protocol, field, recorded, rescored)],
    "broken": [the record rules it breaks among what is not recomputed], "num_samples": n} for a
    result written with --save-predictions. Every field of RESCORED, `metrics` and `reference` is
    compared, and the protocols both ways; NOT_RESCORED cannot be (zoo.checks keeps them honest)."""
    from zoo import checks, schema
    from zoo.datasets import open_source
    from zoo.fileutil import read_json
    from zoo.manifest import load_manifest
    from zoo.paths import cache_dir
    from zoo.predictions import check_digest, read_predictions

    result_path = Path(result_path)
    rec = read_json(result_path, "result")
    schema.validate(rec, str(result_path), rules=())  # the accuracy is recomputed, the rest checked after
    if rec["provenance"]["dataset"]["builtin"] and data is not None:  # the labels are the model's own sample's
        raise ZooError(f"--data {shown(data)}: {shown(result_path)} was run on the built-in data, whose labels are "
                       f"read from the model's own sample; leave --data out")
    kept = rec.get("predictions")
    if not kept:
        raise ZooError(f"{shown(result_path)}: the run kept no predictions (run it with --save-predictions)")
    folder = Path(kept["path"])
    if not folder.is_absolute():
        folder = result_path.parent / folder
    manifest = load_manifest(rec["model"]["name"])
    # run-only options (output files such as drawings) are not redone: scoring reads, never writes
    run_only = manifest.adapter_class().run_only_options
    adapter = manifest.adapter(**{k: v for k, v in rec["model"]["options"].items() if k not in run_only})
    prov = rec["provenance"]["dataset"]
    root = None if prov["builtin"] else Path(data or prov["path"])
    source = open_source(manifest, root, Path(prov["ids_file"]) if prov.get("ids_file") else None, prov.get("limit"),
                         cache_dir(), split="evaluation")
    ids, items = read_predictions(folder)  # the index's shape first (one line naming what is wrong)
    check_digest(folder, kept)  # then the files are the run's, before anything is scored
    if ids != source.ids:
        raise ZooError(f"{shown(folder)}: the saved predictions' ids ({len(ids)}) are not the dataset's "
                       f"({len(source.ids)}, from {shown(source.root)}): not the same data")
    metrics = adapter.metrics(source)
    for sid, prediction in items:
        target = adapter.target(source.read_label(sid))
        for m in metrics:
            m.update(prediction, target)
    blocks = accuracy_blocks({rec["accuracy"][0]["batch_size"] if rec["accuracy"] else 1: metrics}, manifest, source)
    groups = tuple(g for g in checks.GROUPS if g != "accuracy")  # what the re-scoring cannot recompute
    return {"figures": {b["name"]: b["metrics"] for b in blocks}, "differences": differences(rec["accuracy"], blocks),
            "broken": checks.broken(rec, groups), "num_samples": len(ids)}


def rescore_main(result_path: Path, data: Path | None = None) -> int:
    """Prints the re-scored figures beside the recorded ones; 0 when all are equal and the record
    keeps its rules, 1 otherwise (a `DIFFERS <protocol>.<field>` or `BREAKS` line each)."""
    out = rescore(result_path, data)
    for name, figs in out["figures"].items():
        shown_figs = ", ".join(f"{k}={v:.6g}" for k, v in figs.items() if isinstance(v, float))
        print(f"{name}: {shown_figs}")
    print(f"not re-scored: {', '.join(NOT_RESCORED[:2])} (only the first batch size's predictions are kept; "
          "held to the record rules instead)", file=sys.stderr)
    for name, key, old, new in out["differences"]:
        print(f"DIFFERS {name}.{key}: recorded {old}, re-scored {new}", file=sys.stderr)
    for rule in out["broken"]:
        print(f"BREAKS {shown(result_path)}: {rule}", file=sys.stderr)
    if out["differences"] or out["broken"]:
        return 1
    print(f"re-scored {out['num_samples']} saved predictions: every figure equals the record's")
    return 0
