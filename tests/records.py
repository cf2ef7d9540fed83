"""Edited records for the host tests: a test that changes a record's headline figure (an accuracy
value, a throughput) states the figures derived from it again, as the pipeline would, so that
the record still keeps the record checker's rules (zoo.checks) and the test exercises what it
means to (a regression, a report cell), not the checker."""
from __future__ import annotations


def restated(rec: dict) -> dict:
    """rec (edited in place and returned) with every derived figure recomputed from the headline
    ones: accuracy num_samples (the dataset's), metrics[metric] and num_samples, reference delta / relative_drop / passed (none on a subset);
    perf latency mean (infer_only) or samples and wall time (pipeline) from the throughput and the
    dataset, pipeline_vs_infer."""
    ds = rec["provenance"]["dataset"]
    subset = ds.get("expected_samples") is None or ds["num_samples"] != ds["expected_samples"]
    for a in rec["accuracy"]:
        a["num_samples"] = ds["num_samples"]  # every metric counts every sample of the dataset
        if a.get("metrics") and a["metric"] in a["metrics"]:
            a["metrics"][a["metric"]] = a["value"]
        if a.get("metrics") and "num_samples" in a["metrics"]:
            a["metrics"]["num_samples"] = float(ds["num_samples"])
        ref = a.get("reference")
        if ref:
            ref["delta"] = a["value"] - ref["value"]
            ref["relative_drop"] = (ref["value"] - a["value"]) / ref["value"]
            a["passed"] = None if subset else ref["relative_drop"] <= ref["tolerance"]
    infer = {}
    for p in rec["perf"]:
        if p["status"] != "ok" or not p.get("throughput"):
            continue
        if p["scope"] == "infer_only":
            p["latency_ms"]["mean"] = 1000.0 * p["batch_size"] / p["throughput"]
            infer[p["batch_size"]] = p["throughput"]
        else:
            p["num_samples"] = ds["num_samples"] if not p.get("shards") else p["num_samples"]
            p["wall_s"] = p["num_samples"] / p["throughput"]
    for p in rec["perf"]:
        if p["scope"] == "pipeline" and p["status"] == "ok" and "pipeline_vs_infer" in p and p["batch_size"] in infer:
            p["pipeline_vs_infer"] = p["throughput"] / infer[p["batch_size"]]
    return rec
