"""`python -m zoo`: --runtime/--runtimes, with --backend/--backends as their old names."""
from __future__ import annotations

from zoo.cli import parser
from zoo.stages.config import from_json, from_namespace


def test_runtime_flags_and_their_old_names():
    p = parser()
    assert p.parse_args(["run", "--model", "unetpp"]).runtime == "onnxruntime"
    assert p.parse_args(["run", "--model", "unetpp", "--runtime", "openvino"]).runtime == "openvino"
    assert p.parse_args(["run", "--model", "unetpp", "--backend", "torch"]).runtime == "torch"
    assert p.parse_args(["bench", "--model", "unetpp", "--backends", "torch,openvino"]).runtimes == "torch,openvino"
    assert p.parse_args(["bench", "--model", "unetpp", "--runtimes", "openvino"]).runtimes == "openvino"


def test_bench_configs_take_their_runtime_from_runtimes():
    args = parser().parse_args(["bench", "--model", "unetpp", "--runtimes", "torch,openvino", "--iters", "2"])
    cfgs = [from_namespace(args, runtime=r) for r in args.runtimes.split(",")]
    assert [c.runtime for c in cfgs] == ["torch", "openvino"] and all(c.iterations == 2 for c in cfgs)


def test_an_isolate_config_with_the_old_key_still_reads():
    assert from_json('{"model": "unetpp", "backend": "torch"}').runtime == "torch"
    assert from_json('{"model": "unetpp", "backend": "torch", "runtime": "openvino"}').runtime == "openvino"
