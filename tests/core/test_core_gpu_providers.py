"""ONNX Runtime CUDA / TensorRT runtimes without a GPU: provider lists and options, the one-line
error when the provider is missing, and the IO-binding path (run here on the CPU device, the same
code that times host-to-device and device-to-host copies on a GPU)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from zoo.errors import ZooError
from zoo.onnx_export import export_onnx
from zoo.pipeline import infer_only
from zoo.runtimes import ModelArtifacts, get_runtime
from zoo.runtimes.onnxruntime_rt import OnnxRuntimeCuda, OnnxRuntimeTensorRT


def test_missing_providers_are_a_one_line_error(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ZooError, match=r"runtime 'onnxruntime-cuda' is not available: onnxruntime .* has no "
                                       r"CUDAExecutionProvider here .*available: CPUExecutionProvider"):
        get_runtime("onnxruntime-cuda")
    with pytest.raises(ZooError, match=r"no TensorrtExecutionProvider here .*TensorRT"):
        get_runtime("onnxruntime-trt")


def test_provider_lists_and_options(monkeypatch, tmp_path):
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setenv("ZOO_CUDA_DEVICE", "1")
    cuda = get_runtime("onnxruntime-cuda")(2)
    assert cuda.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"] and cuda.device_id == 1
    assert cuda.provider_options(tmp_path)[0] == {"device_id": "1", "cudnn_conv_algo_search": "EXHAUSTIVE",
                                                  "do_copy_in_default_stream": "1"}
    trt = get_runtime("onnxruntime-trt")(2)
    assert trt.providers[0] == "TensorrtExecutionProvider"
    opts = trt.provider_options(tmp_path)[0]
    assert opts["trt_fp16_enable"] == "False" and opts["trt_engine_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path.resolve() / "compiled" / "tensorrt" / "fp32-graph")
    assert OnnxRuntimeCuda.device_type == OnnxRuntimeTensorRT.device_type == "cuda"


def test_io_binding_path_times_copies(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
    path = tmp_path / "m.onnx"
    export_onnx(net, np.zeros((1, 3, 8, 8), np.float32), path, "x", "y", 17, True)

    class CpuBound(OnnxRuntimeCuda):  # the GPU runtime's IO-binding code on the CPU provider
        providers = ["CPUExecutionProvider"]
        ort_device = "cpu"

        def provider_options(self, cache, graph_sha="", table=None):
            return [{}]

    rt = CpuBound(1)
    rt.compile(ModelArtifacts(path, ["x"], ["y"]), tmp_path)
    rt.load()
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    out = rt.infer({"x": x})["y"]
    with torch.no_grad():
        np.testing.assert_allclose(out, net(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
    assert set(rt.last_timing) == {"h2d_ms", "compute_ms", "d2h_ms"}
    block = infer_only(rt, {"x": x}, 2, warmup=1, iterations=4, time_budget_s=None, input_desc="z")
    for k in ("h2d_latency_ms", "compute_latency_ms", "d2h_latency_ms"):
        assert block[k]["count"] == 4
    assert rt.settings()["io_binding"] is True


# --- reduced precisions, by construction (no GPU here) ------------------------------------------
# What is tested: the provider options per precision, the TensorRT int8 calibration table made on
# this CPU from the run's calibration samples (ORT's calibrator, the file the EP reads), and the
# float16 graph of CUDA fp16 run on the CPU provider. What TensorRT then builds and executes, and
# the CUDA kernels' fp16 numerics, only a GPU can show.

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import onnx  # noqa: E402

from zoo.manifest import load_manifest  # noqa: E402
from zoo.quant.calibration_set import open_calibration  # noqa: E402
from zoo.quant.fp16 import FILE as FP16_FILE  # noqa: E402
from zoo.quant.trt_table import TABLE, read_table  # noqa: E402
from zoo.runtimes.onnxruntime_rt import trt_engine_dir  # noqa: E402


@pytest.fixture(scope="module")
def unetpp_calibration(tmp_path_factory):
    """open_calibration(size) over unetpp's built-in calibration split (6 real DSB2018 images,
    preprocessed as the evaluation is)."""
    m = load_manifest("unetpp")
    adapter, cache = m.adapter(), tmp_path_factory.mktemp("calcache")
    return m, lambda size=32: open_calibration(m, adapter, None, None, size, "minmax", 0, False, cache)


@pytest.fixture(scope="module")
def small_onnx(unetpp_calibration, tmp_path_factory, make_model):
    """The conftest's conv+BN+upsample net exported with unetpp's input name (3-channel input)."""
    m, _ = unetpp_calibration
    path = tmp_path_factory.mktemp("small") / "small.onnx"
    export_onnx(make_model(0), np.zeros((1, 3, 96, 96), np.float32), path, m.input["name"], m.output["name"], 17, True)
    return path


def test_trt_provider_options_per_precision(tmp_path):
    sha = "ab" * 32
    table = tmp_path / "quantized" / "tensorrt" / "k1" / TABLE
    table.parent.mkdir(parents=True)
    table.write_bytes(b"x")
    opts = {p: OnnxRuntimeTensorRT(1, p).provider_options(tmp_path, sha, table if p == "int8" else None)[0]
            for p in ("fp32", "fp16", "int8")}
    assert (opts["fp32"]["trt_fp16_enable"], opts["fp32"]["trt_int8_enable"]) == ("False", "False")
    assert (opts["fp16"]["trt_fp16_enable"], opts["fp16"]["trt_int8_enable"]) == ("True", "False")
    assert (opts["int8"]["trt_fp16_enable"], opts["int8"]["trt_int8_enable"]) == ("False", "True")
    assert opts["int8"]["trt_int8_use_native_calibration_table"] == "False"
    for p in ("fp32", "fp16"):
        assert not any(k.startswith("trt_int8_") and k != "trt_int8_enable" for k in opts[p])
    # one engine folder per precision (and per table): an fp16 engine is never found by fp32
    engines = {p: o["trt_engine_cache_path"] for p, o in opts.items()}
    assert len(set(engines.values())) == 3 and all(Path(e).is_dir() for e in engines.values())
    assert engines["fp16"] == str(trt_engine_dir(tmp_path, sha, "fp16"))
    assert Path(engines["fp32"]).parent == tmp_path.resolve() / "compiled" / "tensorrt"
    assert sha[:16] in engines["fp32"] and "k1" in engines["int8"]
    # the EP opens trt_engine_cache_path joined with the table name: that is the table
    name = opts["int8"]["trt_int8_calibration_table_name"]
    assert not os.path.isabs(name)
    assert Path(os.path.normpath(os.path.join(engines["int8"], name))) == table.resolve()
    assert trt_engine_dir(tmp_path, "cd" * 32, "fp32") != trt_engine_dir(tmp_path, sha, "fp32")
    with pytest.raises(ZooError, match="int8 needs a calibration table"):
        OnnxRuntimeTensorRT(1, "int8").provider_options(tmp_path, sha, None)


def test_precisions_offered_and_refused():
    assert OnnxRuntimeTensorRT.precisions == ("fp32", "fp16", "int8")
    assert OnnxRuntimeCuda.precisions == ("fp32", "fp16")
    assert OnnxRuntimeTensorRT.precision_problem("fp16") is None and OnnxRuntimeTensorRT.precision_problem("int8") is None
    assert OnnxRuntimeCuda.precision_problem("int8") == ("runtime onnxruntime-cuda does not run int8 "
                                                         "(it runs: fp32, fp16)")
    assert "does not run bf16" in OnnxRuntimeTensorRT.precision_problem("bf16")
    assert OnnxRuntimeTensorRT.needs_calibration("int8") and not OnnxRuntimeCuda.needs_calibration("fp16")


def test_trt_int8_calibration_table_from_the_calibration_samples(small_onnx, unetpp_calibration, tmp_path):
    m, open_cal = unetpp_calibration
    cal = open_cal()
    rt = OnnxRuntimeTensorRT(1, "int8")
    arts = ModelArtifacts(small_onnx, [m.input["name"]], [m.output["name"]], calibration=cal)
    compiled = rt.compile(arts, tmp_path)
    table = Path(compiled.extra["calibration_table"])
    assert table.name == TABLE and table.parent.parent == tmp_path / "quantized" / "tensorrt"
    assert table.stat().st_size > 0 and {p.name for p in table.parent.iterdir()} >= {
        TABLE, "calibration.cache", "calibration.json"}
    ranges = read_table(table)
    # every activation of the graph (its input and every node's output) has a range
    graph = onnx.load(str(small_onnx)).graph
    inits = {i.name for i in graph.initializer}
    activations = {o for n in graph.node for o in n.output if o not in inits} | {graph.input[0].name}
    assert activations <= set(ranges), activations - set(ranges)
    assert all(np.isfinite(v) and v > 0 for v in ranges.values())
    # the ranges are those of the calibration samples: the input's and the output's max |value|
    xs = list(cal.inputs())
    assert len(xs) == 6
    assert ranges[m.input["name"]] == pytest.approx(max(np.abs(x).max() for x in xs), rel=1e-6)
    sess = ort.InferenceSession(str(small_onnx), providers=["CPUExecutionProvider"])
    y_max = max(np.abs(sess.run(None, {m.input["name"]: x[None]})[0]).max() for x in xs)
    assert ranges[m.output["name"]] == pytest.approx(float(y_max), rel=1e-5)
    # the options point at it; cached: a second compile reuses the entry, a new calibration does not
    opts = compiled.extra["provider_options"][0]
    assert Path(os.path.normpath(os.path.join(opts["trt_engine_cache_path"], opts["trt_int8_calibration_table_name"]))) \
        == table.resolve()
    mtime = table.stat().st_mtime_ns
    assert Path(OnnxRuntimeTensorRT(1, "int8").compile(arts, tmp_path).extra["calibration_table"]) == table
    assert table.stat().st_mtime_ns == mtime
    arts3 = ModelArtifacts(small_onnx, [m.input["name"]], [m.output["name"]], calibration=open_cal(3))
    table3 = Path(OnnxRuntimeTensorRT(1, "int8").compile(arts3, tmp_path).extra["calibration_table"])
    assert table3 != table and read_table(table3)[m.input["name"]] <= ranges[m.input["name"]]
    # int8 without calibration samples, --keep-fp32 with TensorRT: one-line errors
    with pytest.raises(ZooError, match="int8 needs the run's calibration samples"):
        OnnxRuntimeTensorRT(1, "int8").compile(ModelArtifacts(small_onnx, ["x"], ["y"]), tmp_path)
    with pytest.raises(ZooError, match="--keep-fp32 is not supported"):
        OnnxRuntimeTensorRT(1, "fp16").compile(ModelArtifacts(small_onnx, ["x"], ["y"], keep_fp32=("a",)), tmp_path)


def test_damaged_calibration_table_is_rebuilt(small_onnx, unetpp_calibration, tmp_path):
    m, open_cal = unetpp_calibration
    arts = ModelArtifacts(small_onnx, [m.input["name"]], [m.output["name"]], calibration=open_cal(2))
    table = Path(OnnxRuntimeTensorRT(1, "int8").compile(arts, tmp_path).extra["calibration_table"])
    good = read_table(table)
    table.write_bytes(table.read_bytes()[:20])  # truncated
    assert Path(OnnxRuntimeTensorRT(1, "int8").compile(arts, tmp_path).extra["calibration_table"]) == table
    assert read_table(table) == good


class _CpuCuda(OnnxRuntimeCuda):
    """The CUDA runtime's whole path (prepare, provider options, IO binding) on the CPU provider."""
    providers = ["CPUExecutionProvider"]
    ort_device = "cpu"

    def provider_options(self, cache, graph_sha="", table=None):
        return [{}]


def test_cuda_fp16_runs_a_float16_graph(small_onnx, tmp_path):
    x = np.random.default_rng(3).random((2, 3, 96, 96), dtype=np.float32)
    graph = onnx.load(str(small_onnx)).graph
    name_in, name_out = graph.input[0].name, graph.output[0].name
    arts = ModelArtifacts(small_onnx, [name_in], [name_out])
    outs = {}
    for p in ("fp32", "fp16"):
        rt = _CpuCuda(1, p)
        compiled = rt.compile(arts, tmp_path)
        rt.load()
        outs[p] = rt.infer({name_in: x})[name_out]
        assert rt.executed_precision() == p
    assert rt.compiled.path.name == FP16_FILE and rt.compiled.path.parent.parent == tmp_path / "converted" / "fp16"
    assert compiled.extra["graph_conversion"].startswith("float16")
    model = onnx.load(str(rt.compiled.path))
    onnx.checker.check_model(model, full_check=True)
    f32 = onnx.TensorProto.FLOAT
    assert [i.type.tensor_type.elem_type for i in (*model.graph.input, *model.graph.output)] == [f32, f32]
    floats = [t for t in model.graph.initializer if t.data_type in (f32, onnx.TensorProto.FLOAT16)]
    assert floats and all(t.data_type == onnx.TensorProto.FLOAT16 for t in floats)
    assert outs["fp16"].dtype == np.float32
    err = np.abs(outs["fp16"] - outs["fp32"]).max() / np.abs(outs["fp32"]).max()
    print(f"fp16 vs fp32 max error / max abs: {err:.2e}")
    assert 0 < err < 5e-3, err  # fp16 rounding: not bit-identical, yet close
    mtime = rt.compiled.path.stat().st_mtime_ns
    assert _CpuCuda(1, "fp16").compile(arts, tmp_path).path == rt.compiled.path
    assert rt.compiled.path.stat().st_mtime_ns == mtime  # converted once


def test_cuda_fp16_keeps_named_nodes_fp32(small_onnx, tmp_path):
    graph = onnx.load(str(small_onnx)).graph
    conv = next(n for n in graph.node if n.op_type == "Conv")
    arts = ModelArtifacts(small_onnx, [graph.input[0].name], [graph.output[0].name], keep_fp32=(conv.name,))
    rt = _CpuCuda(1, "fp16")
    model = onnx.load(str(rt.compile(arts, tmp_path).path))
    kept = next(n for n in model.graph.node if n.name == conv.name)
    types = {t.name: t.data_type for t in model.graph.initializer}
    assert types[kept.input[1]] == onnx.TensorProto.FLOAT
    assert any(t == onnx.TensorProto.FLOAT16 for t in types.values())
    with pytest.raises(ZooError, match="--keep-fp32: no node named nope"):
        _CpuCuda(1, "fp16").compile(ModelArtifacts(small_onnx, ["x"], ["y"], keep_fp32=("nope",)), tmp_path)


@pytest.mark.parametrize("runtime,precision", [("onnxruntime-trt", "int8"), ("onnxruntime-cuda", "fp16")])
def test_cli_reduced_precision_on_a_missing_gpu_fails_cleanly(tmp_path, runtime, precision):
    proc = subprocess.run([sys.executable, "-m", "zoo", "run", "--model", "unetpp", "--runtime", runtime,
                           "--precision", precision, "--out", str(tmp_path)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: runtime '{runtime}' is not available: onnxruntime ")
