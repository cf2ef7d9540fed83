"""`python -m zoo`: --runtime/--runtimes, with --backend/--backends as their old names."""
from __future__ import annotations

from zoo.cli import parser
from zoo.isolate import config_from_json


def test_runtime_flags_and_their_old_names():
    p = parser()
    assert p.parse_args(["run", "--model", "unetpp"]).runtime == "onnxruntime"
    assert p.parse_args(["run", "--model", "unetpp", "--runtime", "openvino"]).runtime == "openvino"
    assert p.parse_args(["run", "--model", "unetpp", "--backend", "torch"]).runtime == "torch"
    assert p.parse_args(["bench", "--model", "unetpp", "--backends", "torch,openvino"]).runtimes == "torch,openvino"
    assert p.parse_args(["bench", "--model", "unetpp", "--runtimes", "openvino"]).runtimes == "openvino"


def test_an_isolate_config_with_the_old_key_still_reads():
    assert config_from_json('{"model": "unetpp", "backend": "torch"}').runtime == "torch"
