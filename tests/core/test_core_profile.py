"""Per-operator profiles (zoo.profile) from ONNX Runtime's profiler and OpenVINO's counters on a
small real model with a Conv, a ConvTranspose and a Gemm, and the summary's arithmetic."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.cost import onnx_cost
from zoo.onnx_export import export_onnx
from zoo.profile import OPENVINO_TO_ONNX, TOP, summarize_ops
from zoo.runtimes import ModelArtifacts, get_runtime


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.up = torch.nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.fc = torch.nn.Linear(8 * 32 * 32, 10)

    def forward(self, x):
        y = self.up(torch.relu(self.conv(x)))
        return self.fc(y.flatten(1))


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("prof") / "m.onnx"
    export_onnx(Net().eval(), np.zeros((1, 3, 16, 16), np.float32), path, "x", "y", 17, True)
    return path


def test_summarize_ops_hand_computed():
    times = {"Conv": [300.0, 30], "Reorder": [60.0, 6], "ConvTranspose": [40.0, 3]}
    flops = {"Conv": 1e9, "ConvTranspose": 2e8}
    s = summarize_ops(times, calls=3, batch_size=2, flops_by_op=flops)
    assert s["calls"] == 3 and s["total_ms_per_call"] == pytest.approx(400 / 3)
    assert [r["op_type"] for r in s["ops"]] == ["Conv", "Reorder", "ConvTranspose"]
    conv = s["ops"][0]
    assert conv["ms_per_call"] == pytest.approx(100) and conv["share"] == pytest.approx(0.75)
    assert conv["kernels_per_call"] == pytest.approx(10)
    assert conv["gflops"] == pytest.approx(1e9 * 2 / 0.1 / 1e9)          # 20 GFLOP/s
    assert "gflops" not in s["ops"][1]
    assert s["ops"][2]["gflops"] == pytest.approx(2e8 * 2 / (40 / 3 / 1e3) / 1e9)
    # a runtime's own names mapped to the ONNX types whose FLOPs are counted
    ov = summarize_ops({"Convolution": [10.0, 1], "FullyConnected": [5.0, 1]}, 1, 1,
                       {"Conv": 1e8, "Gemm": 3e7, "MatMul": 2e7}, OPENVINO_TO_ONNX)
    assert ov["ops"][0]["gflops"] == pytest.approx(1e8 / 0.01 / 1e9)
    assert ov["ops"][1]["gflops"] == pytest.approx(5e7 / 0.005 / 1e9)   # Gemm + MatMul together
    # two runtime types running one ONNX type: the group's rate on both rows, never each alone
    grp = summarize_ops({"Convolution": [30.0, 1], "GroupConvolution": [10.0, 1], "Reorder": [5.0, 1]}, 1, 1,
                        {"Conv": 4e9}, OPENVINO_TO_ONNX)
    conv_rows = [r for r in grp["ops"] if r["op_type"] in ("Convolution", "GroupConvolution")]
    assert [r["gflops"] for r in conv_rows] == pytest.approx([4e9 / 0.04 / 1e9] * 2)   # 100, not 133 / 400
    assert {r["gflops_of"] for r in conv_rows} == {"Convolution+GroupConvolution"}
    assert "gflops_of" not in ov["ops"][0]
    # ONNX Runtime's fused kernels count as the ONNX operator they run
    from zoo.profile import ONNXRUNTIME_TO_ONNX
    fused = summarize_ops({"Conv": [20.0, 2], "FusedConv": [20.0, 2]}, 1, 1, {"Conv": 4e9}, ONNXRUNTIME_TO_ONNX)
    assert [r["gflops"] for r in fused["ops"]] == pytest.approx([100.0, 100.0])
    # more types than TOP: the rest summed into one row, shares still add up to 1
    many = summarize_ops({f"op{i}": [float(i + 1), 1] for i in range(TOP + 4)}, 1, 1)
    assert len(many["ops"]) == TOP + 1 and many["ops"][-1]["op_type"] == "(other)"
    assert sum(r["share"] for r in many["ops"]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        summarize_ops(times, calls=0, batch_size=1)


def _check_profile(rt, onnx_file, names: dict):
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    times = rt.op_times({"x": x}, warmup=1, calls=3)
    assert times, "no operator times"
    assert all(ms >= 0 and kernels >= 1 for ms, kernels in times.values())
    cost = onnx_cost(onnx_file, [3, 16, 16])
    s = summarize_ops(times, 3, 2, cost["by_op"], rt.profile_op_names)
    types = {r["op_type"] for r in s["ops"]}
    for want in names["present"]:
        assert want in types, (want, types)
    assert sum(r["share"] for r in s["ops"]) == pytest.approx(1.0)
    conv = next(r for r in s["ops"] if r["op_type"] == names["conv"])
    assert conv["gflops"] > 0 and conv["kernels_per_call"] >= 1
    return s


def test_onnxruntime_profile_of_the_compiled_graph(onnx_file, tmp_path):
    rt = get_runtime("onnxruntime")(1)
    rt.compile(ModelArtifacts(onnx_file, ["x"], ["y"], key="k"), tmp_path)
    rt.load()
    _check_profile(rt, onnx_file, {"present": ["Conv", "ConvTranspose"], "conv": "Conv"})
    rt.close()


def test_openvino_profile_counters(onnx_file, tmp_path):
    pytest.importorskip("openvino", reason="openvino is not installed in this model environment")
    rt = get_runtime("openvino")(1)
    rt.compile(ModelArtifacts(onnx_file, ["x"], ["y"], key="k"), tmp_path)
    rt.load()
    rt.infer({"x": np.zeros((2, 3, 16, 16), np.float32)})
    s = _check_profile(rt, onnx_file, {"present": ["Convolution", "ConvolutionBackpropData"], "conv": "Convolution"})
    assert next(r for r in s["ops"] if r["op_type"] == "ConvolutionBackpropData")["gflops"] > 0
    rt.close()


def test_torch_runtime_has_no_profiler(onnx_file):
    rt = get_runtime("torch")(1)
    assert rt.op_times({"x": np.zeros((1, 3, 16, 16), np.float32)}, 1, 1) is None


def test_a_failing_profiler_leaves_the_run_standing(capsys):
    from zoo.errors import ZooError
    from zoo.stages.infer import op_profile as _op_profile

    class Broken:
        name = "openvino"
        profile_op_names = OPENVINO_TO_ONNX

        def op_times(self, feeds, warmup, calls):
            raise ZooError("OpenVINO cannot compile the model for profiling (no memory)")

    got = _op_profile(Broken(), {}, 2, 3, {"by_op": {"Conv": 1e9}})
    assert got == {"unavailable": "profiling failed: OpenVINO cannot compile the model for profiling (no memory)"}
    assert "operator profile FAILED" in capsys.readouterr().err
    # a runtime without a profiler says so
    rt = get_runtime("torch")(1)
    assert _op_profile(rt, {}, 1, 2, {})["unavailable"].startswith("torch: no per-operator profiler")
