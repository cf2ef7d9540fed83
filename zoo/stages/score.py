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
    """Equal figures; NaN and None (how a strict JSON record keeps NaN) are the same."""
    def norm(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
    return norm(a) == norm(b)


def rescore(result_path: Path, data: Path | None = None) -> dict:
    """{"figures": {protocol: {figure: value}}, "differences": [(protocol, figure, recorded, rescored)],
    "num_samples": n} for a result written with --save-predictions."""
    from zoo import schema
    from zoo.datasets import open_source
    from zoo.fileutil import read_json
    from zoo.manifest import load_manifest
    from zoo.paths import cache_dir
    from zoo.predictions import read_predictions

    result_path = Path(result_path)
    rec = read_json(result_path, "result")
    schema.validate(rec, str(result_path))
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
    ids, items = read_predictions(folder)
    if ids != source.ids:
        raise ZooError(f"{shown(folder)}: the saved predictions' ids ({len(ids)}) are not the dataset's "
                       f"({len(source.ids)}, from {shown(source.root)}): not the same data")
    metrics = adapter.metrics(source)
    for sid, prediction in items:
        target = adapter.target(source.read_label(sid))
        for m in metrics:
            m.update(prediction, target)
    blocks = accuracy_blocks({rec["accuracy"][0]["batch_size"] if rec["accuracy"] else 1: metrics}, manifest, source)
    recorded = {b["name"]: b["metrics"] for b in rec["accuracy"]}
    figures, differences = {}, []
    for b in blocks:
        figures[b["name"]] = b["metrics"]
        for key, value in b["metrics"].items():
            old = recorded.get(b["name"], {}).get(key)
            if not _same(old, value):
                differences.append((b["name"], key, old, value))
    for name in recorded:
        if name not in figures:
            differences.append((name, "(protocol)", "recorded", "not computed"))
    return {"figures": figures, "differences": differences, "num_samples": len(ids)}


def rescore_main(result_path: Path, data: Path | None = None) -> int:
    """Prints the re-scored figures beside the recorded ones; 0 when all are equal, 1 otherwise."""
    out = rescore(result_path, data)
    for name, figs in out["figures"].items():
        shown_figs = ", ".join(f"{k}={v:.6g}" for k, v in figs.items() if isinstance(v, float))
        print(f"{name}: {shown_figs}")
    if out["differences"]:
        for name, key, old, new in out["differences"]:
            print(f"DIFFERS {name}.{key}: recorded {old}, re-scored {new}", file=sys.stderr)
        return 1
    print(f"re-scored {out['num_samples']} saved predictions: every figure equals the record's")
    return 0
