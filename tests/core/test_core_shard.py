"""zoo.shard without a cluster (issue 15): the device-visibility environment built per actor, the
Ray resource of each runtime, the aggregation of the shards' perf blocks, the exact merge of their
metric contributions, and the --shards options checked before any work. The real Ray runs are in
tests/models/unetpp/test_unetpp_sharding.py."""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

from zoo.errors import ZooError
from zoo.metrics.binary import BinaryIoU
from zoo.runtimes import RUNTIMES
from zoo.shard import aggregate_infer, aggregate_pipeline, merge_metrics, shard_resource, visibility_env
from zoo.stages.config import RunConfig, check_config


@pytest.mark.parametrize("resource,ray_ids,devices,env", [
    ("NPU", ["1"], None, {"ASCEND_RT_VISIBLE_DEVICES": "1", "ZOO_ASCEND_DEVICE": "0"}),
    ("NPU", ["1"], ["4", "6"], {"ASCEND_RT_VISIBLE_DEVICES": "6", "ZOO_ASCEND_DEVICE": "0"}),
    ("GPU", ["0", "1"], ["2", "3", "5"], {"CUDA_VISIBLE_DEVICES": "2,3", "ZOO_CUDA_DEVICE": "0"}),
    ("GPU", ["3"], None, {"CUDA_VISIBLE_DEVICES": "3", "ZOO_CUDA_DEVICE": "0"}),
    (None, [], None, {}),                 # CPU slots: nothing to hide
    ("FPGA", ["0"], None, {}),            # a resource without a known visibility variable
])
def test_visibility_env_per_actor(resource, ray_ids, devices, env):
    assert visibility_env(resource, ray_ids, devices) == env


def test_visibility_env_unit_beyond_devices_is_an_error():
    with pytest.raises(ZooError, match="Ray assigned NPU unit 2, but --devices lists only 2 device"):
        visibility_env("NPU", ["2"], ["0", "1"])


def test_shard_resource_of_each_runtime():
    cfg = RunConfig(model="unetpp", shards=2)
    assert shard_resource(cfg, RUNTIMES["onnxruntime"]) is None
    assert shard_resource(cfg, RUNTIMES["openvino"]) is None
    assert shard_resource(cfg, RUNTIMES["ascend"]) == "NPU"
    assert shard_resource(cfg, RUNTIMES["onnxruntime-cuda"]) == "GPU"
    assert shard_resource(cfg, RUNTIMES["onnxruntime-trt"]) == "GPU"
    assert shard_resource(dataclasses.replace(cfg, shard_resource="NPU"), RUNTIMES["onnxruntime"]) == "NPU"


def _iv(half, tps):
    return {"half_width": half, "windows": len(tps), "window_throughputs": tps, "window_calls": 1, "tolerance": 0.02}


def _pipe(n, wall, lat, read=1.0, infer=2.0, iv=None):
    stages = {"read": read, "preprocess": 0.5, "infer": infer, "postprocess": 0.5}
    return {"batch_size": 4, "scope": "pipeline", "status": "ok", "error": None, "stopped_by": "dataset_end",
            "num_samples": n, "wall_s": wall, "throughput": n / wall, "latency_ms": {}, "latencies_ms": lat,
            "stages": {k: {"total_s": v, "share": 0.0, "throughput": 0.0} for k, v in stages.items()},
            "workers": 1, "postprocess_workers": 1, "interval": iv or _iv(0.01, [4.0, 4.0, 4.0]),
            "cpu": {"process_s": 3.0, "stages_s": {"read": 0.5, "preprocess": 0.5, "postprocess": 0.5}}}


def test_aggregate_pipeline_counts_every_sample_over_the_whole_wall_time():
    agg = aggregate_pipeline([_pipe(8, 2.0, [10.0, 20.0]), _pipe(7, 1.5, [30.0])], 4, wall=2.5)
    assert agg["num_samples"] == 15 and agg["wall_s"] == 2.5 and agg["throughput"] == 15 / 2.5
    assert agg["latency_ms"]["count"] == 3 and agg["latency_ms"]["mean"] == 20.0  # pooled, not averaged
    assert agg["stages"]["infer"]["total_s"] == 4.0 and agg["stages"]["read"]["total_s"] == 2.0
    assert sum(s["share"] for s in agg["stages"].values()) == pytest.approx(1.0)
    assert agg["cpu"]["process_s"] == 6.0 and agg["cpu"]["stages_s"]["read"] == 1.0
    assert [s["num_samples"] for s in agg["shards"]] == [8, 7] and agg["shards"][1]["throughput"] == 7 / 1.5
    assert "latencies_ms" not in agg
    assert agg["latency_per_sample_ms"]["mean"] == 5.0  # 20 ms per batch of 4
    iv = agg["interval"]  # 1% of 4/s and 1% of 4.67/s in quadrature, over the shards' summed 8.67/s
    assert iv["half_width"] == pytest.approx((0.04 ** 2 + (0.01 * 7 / 1.5) ** 2) ** 0.5 / (4 + 7 / 1.5))
    assert iv["stable"] is True and iv["low"] == pytest.approx(6 / (1 + iv["half_width"]))
    wide = aggregate_pipeline([_pipe(8, 2.0, [10.0]), _pipe(7, 1.5, [30.0], iv=_iv(None, [4.0]))], 4, wall=2.5)
    assert wide["interval"]["stable"] is False and wide["interval"]["half_width"] is None


def test_aggregate_infer_adds_the_concurrent_throughputs():
    def block(tp, wall, stopped, lat):
        return {"batch_size": 2, "scope": "infer_only", "status": "ok", "error": None, "input": "dataset batch",
                "warmup": 1, "iterations": len(lat), "stopped_by": stopped, "num_samples": 2 * len(lat),
                "wall_s": wall, "throughput": tp, "latency_ms": {}, "latencies_ms": lat, "cpu_s_per_sample": 0.1,
                "interval": _iv(0.05, [tp] * 3)}
    agg = aggregate_infer([block(10.0, 1.0, "stable", [1.0, 3.0]), block(12.0, 2.0, "time_budget", [2.0])], 2)
    assert agg["throughput"] == 22.0 and agg["num_samples"] == 6 and agg["iterations"] == 3
    assert agg["stopped_by"] == "time_budget"  # the last shard to stop
    assert agg["latency_ms"]["count"] == 3 and agg["latency_ms"]["max"] == 3.0
    assert "2 shards timed at once" in agg["input"]
    assert agg["interval"]["window_throughputs"] == [22.0] * 3 and agg["interval"]["stable"] is False  # +-3.5% > 2%


def test_merge_metrics_replays_in_shard_order():
    rng = np.random.default_rng(0)
    preds = [{"mask": rng.random((6, 6)) > 0.5} for _ in range(9)]
    targets = [rng.random((6, 6)) > 0.4 for _ in range(9)]
    whole = BinaryIoU("b", "", "mask", aggregate="batch", group=4)
    for p, t in zip(preds, targets):
        whole.update(p, t)
    worker = BinaryIoU("b", "", "mask", aggregate="batch", group=4)
    shards = [[[worker.contribution(p, t) for p, t in zip(preds[a:b], targets[a:b])]] for a, b in ((0, 5), (5, 9))]
    merged = merge_metrics([BinaryIoU("b", "", "mask", aggregate="batch", group=4)], shards)[0]
    assert merged.compute() == whole.compute()
    swapped = merge_metrics([BinaryIoU("b", "", "mask", aggregate="batch", group=4)], shards[::-1])[0]
    assert swapped.compute() != whole.compute()  # the order matters: the merge keeps it


@pytest.mark.parametrize("fields,message", [
    ({"cluster": "local"}, "--cluster needs --shards"),
    ({"devices": "0,1"}, "--devices needs --shards"),
    ({"shards": 2, "isolate": True}, "--shards and --isolate cannot be combined"),
    ({"shards": 2, "save_predictions": True}, "--shards and --save-predictions cannot be combined"),
    ({"shards": 2, "profile": 5}, "--shards and --profile cannot be combined"),
    ({"shards": 2, "devices": "0,x"}, "--devices must be distinct comma-separated device numbers"),
    ({"shards": 2, "devices": "1,1"}, "--devices must be distinct"),
    ({"shards": 0}, "--shards must be >= 1"),
    ({"shards": 2, "shard_retries": -1}, "--shard-retries must be >= 0"),
])
def test_sharding_options_are_checked_before_any_work(fields, message):
    with pytest.raises(ZooError, match=message):
        check_config(RunConfig(model="unetpp", **fields))


def test_reduced_precision_shards_need_no_fp32_baseline():
    with pytest.raises(ZooError, match="--shards with --precision int8 needs --no-fp32-baseline"):
        check_config(RunConfig(model="unetpp", shards=2, precision="int8"))


def test_importing_the_zoo_run_path_does_not_import_ray():
    """zoo.shard imports Ray inside its functions only, and the run path imports zoo.shard lazily."""
    import subprocess
    code = "import sys, zoo.cli, zoo.run, zoo.shard, zoo.stages.infer; print('ray' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == "False", proc.stderr[-2000:]
