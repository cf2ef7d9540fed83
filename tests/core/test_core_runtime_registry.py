"""The runtime registry (zoo.runtimes) is the one list of runtimes and their facts: the facts are
consistent, and --precision's choices, the calibration options, the matrix's runtime table, the
peaks' kernels, diagnose's runtimes and the report's precision order are read from it; a
ZOO_RUNTIME_PLUGINS runtime shows up in each; the host reads it without numpy or an engine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import zoo.runtimes as runtimes
from zoo.errors import ZooError
from zoo.runtimes import (PRECISIONS, RUNTIMES, ModelArtifacts, Runtime, diagnosed_runtimes, fact_problem,
                          peak_runtimes, registry)

ROOT = Path(__file__).resolve().parents[2]
SLOW10 = ROOT / "tests" / "fixtures" / "runtimes" / "slow10.py"
BUILT_IN = ("onnxruntime", "openvino", "torch", "onnxruntime-cuda", "onnxruntime-trt", "ascend")
# A plug-in runtime with kernels of its own for the peaks: numpy's matrix product (no convolution)
NUMPY_PLUGIN = '''
import numpy as np
from zoo.cost import best_seconds
from zoo.errors import ZooError
from zoo.peak_kernels import kernel_inputs
from zoo.runtimes.torch_rt import TorchRuntime


class NumpyPeaks(TorchRuntime):
    name = "torch-numpy-peaks"
    package = "numpy"
    peak_precisions = ("fp32",)
    peak_op_labels = {"MatMul": "numpy.matmul"}
    peak_rank = 50

    @classmethod
    def peak_seconds(cls, kernel, precision, threads, repeats, budget_s):
        if kernel.op != "MatMul":
            raise ZooError(f"numpy: no {kernel.op} kernel")
        x, w = kernel_inputs(kernel)
        return best_seconds(lambda: x @ w, repeats, budget_s), f"numpy {np.__version__} matmul"


RUNTIMES = [NumpyPeaks]
'''


@pytest.fixture
def plugins(monkeypatch, tmp_path):
    """ZOO_RUNTIME_PLUGINS = the test plug-in slow10.py and a numpy-peaks plug-in; afterwards the
    registry as it was (built-in runtimes only)."""
    numpy_plugin = tmp_path / "numpy_peaks.py"
    numpy_plugin.write_text(NUMPY_PLUGIN)
    monkeypatch.setenv("ZOO_RUNTIME_PLUGINS", os.pathsep.join([str(SLOW10), str(numpy_plugin)]))
    before, loaded = dict(RUNTIMES), set(runtimes._LOADED)
    yield
    for name in set(RUNTIMES) - set(before):
        RUNTIMES.pop(name)
    runtimes._LOADED.intersection_update(loaded)


# ---------------------------------------------------------------- the facts

def test_built_in_runtimes_and_their_facts_are_consistent():
    assert tuple(RUNTIMES) == BUILT_IN  # the order every listing shows (matrix jobs, --runtime's help)
    for name, cls in RUNTIMES.items():
        assert cls.name == name and issubclass(cls, Runtime)
        assert fact_problem(cls) is None, fact_problem(cls)
        assert cls.precisions and set(cls.precisions) <= set(PRECISIONS), name
        assert cls.device_type in ("cpu", "cuda", "npu")
        assert (cls.accelerator is None) == (cls.device_type == "cpu"), name
        for precision in (*cls.precisions,):
            # a precision that calibrates or converts has the runtime's own quantize hook
            if cls.needs_calibration(precision) or precision in cls.converted_precisions:
                assert cls.quantize is not Runtime.quantize, (name, precision)
    assert [c.name for c in RUNTIMES.values() if not c.runs_onnx_graph] == ["torch"]


def test_a_fact_outside_the_registry_s_precisions_is_refused_in_one_line(tmp_path, monkeypatch):
    bad = tmp_path / "fp8.py"
    bad.write_text("from zoo.runtimes.onnxruntime_rt import OnnxRuntime\n"
                   "class Fp8(OnnxRuntime):\n    name = 'onnxruntime-fp8'\n    precisions = ('fp32', 'fp8')\n"
                   "RUNTIMES = [Fp8]\n")
    monkeypatch.setenv("ZOO_RUNTIME_PLUGINS", str(bad))
    with pytest.raises(ZooError, match=r"precisions names 'fp8', not a precision \(known: fp32, bf16, fp16, int8\)") as err:
        registry()
    assert str(bad) in str(err.value) and "\n" not in str(err.value) and "onnxruntime-fp8" not in RUNTIMES


def test_quantize_hook_leaves_the_exported_graph_at_fp32(tiny_onnx, tmp_path):
    """fp32 compiles the exported graph as it is: every ONNX runtime's quantize hook returns it, and
    records nothing."""
    arts = ModelArtifacts(onnx_path=tiny_onnx, input_names=["images"], output_names=["logits"])
    for name, cls in RUNTIMES.items():
        if cls.runs_onnx_graph:
            assert cls(1, "fp32").quantize(arts, tmp_path) == (tiny_onnx, {}), name


# ---------------------------------------------------------------- who reads them

def test_config_choices_and_calibration_come_from_the_registry():
    from zoo.stages.config import CALIBRATED_PRECISIONS, option, reads_calibration
    assert option("precision").choices == PRECISIONS
    assert all(set(cls.precisions) <= set(option("precision").choices) for cls in RUNTIMES.values())
    assert option("runtime").default in RUNTIMES
    assert option("runtime").help.startswith(", ".join(n + " (default)" * (n == "onnxruntime") for n in BUILT_IN))
    assert CALIBRATED_PRECISIONS == ("int8",)
    # --keep-fp32 reaches a converted precision (CUDA's fp16 copy), the --calib-* options do not
    assert reads_calibration("onnxruntime-cuda", "fp16", "keep_fp32")
    assert not reads_calibration("onnxruntime-cuda", "fp16", "calib_size")
    assert not reads_calibration("onnxruntime-trt", "fp16", "keep_fp32")
    assert all(reads_calibration(n, "int8", f) for n in BUILT_IN for f in ("keep_fp32", "calib_size"))


def test_result_schema_knows_every_precision():
    schema = json.loads((ROOT / "schema" / "result.schema.json").read_text())
    assert set(PRECISIONS) <= set(schema["properties"]["precision"]["enum"])


def test_matrix_table_is_the_registry():
    from runner import matrix as mx
    assert mx.runtime_table() == {n: (c.device_type, tuple(c.precisions)) for n, c in RUNTIMES.items()}
    assert mx.PRECISIONS == PRECISIONS
    assert {n: mx.resources(n) for n in BUILT_IN} == {
        "onnxruntime": {}, "openvino": {}, "torch": {}, "onnxruntime-cuda": {"GPU": 1}, "onnxruntime-trt": {"GPU": 1},
        "ascend": {"NPU": 1}}


def test_peak_kernels_come_from_the_registry():
    import zoo.peaks as peaks
    # the families and their order as measured since the peaks began (the order keys the peak cache)
    assert peaks.kernel_families() == ("torch", "onnxruntime", "openvino")
    for precision in PRECISIONS:
        expected = {c.name for c in peak_runtimes() if precision in c.peak_precisions and peaks.installed(c.name)}
        assert {k.family for k in peaks.kernels(precision)} == expected, precision
    assert set(peaks.versions()) == {c.package for c in peak_runtimes()}
    # GPU runtimes inherit ONNX Runtime's code but measure no CPU peak of their own
    assert {"onnxruntime-cuda", "onnxruntime-trt", "ascend"}.isdisjoint(peaks.kernel_families())


def test_diagnose_and_report_read_the_registry():
    from runner.report import PRECISION_MARKERS, PRECISION_ORDER
    assert diagnosed_runtimes() == ["onnxruntime", "openvino"]
    for name in diagnosed_runtimes():
        cls = RUNTIMES[name]
        assert any(cls.needs_calibration(p) for p in cls.precisions), name
    # ONNX Runtime's --auto is diagnose's own loop; OpenVINO's is its hook (NNCF's accuracy control)
    assert RUNTIMES["onnxruntime"].diagnose_auto(None, None, None, None, "x", "metric", 0.01) is None
    assert "diagnose_auto" in vars(RUNTIMES["openvino"]) and "NNCF" in RUNTIMES["openvino"].diagnose_note
    assert RUNTIMES["onnxruntime"].diagnose_note is None
    assert PRECISION_ORDER == (*PRECISIONS, "mixed")
    assert list(PRECISION_MARKERS) == list(PRECISIONS) and len(set(PRECISION_MARKERS.values())) == len(PRECISIONS)


# ---------------------------------------------------------------- a plug-in runtime

def test_a_plug_in_runtime_shows_up_everywhere(plugins):
    from runner import matrix as mx
    from zoo.peaks import Kernel, kernel_families, kernels, measure
    from zoo.stages.config import reads_calibration
    names = list(registry())
    assert names == [*BUILT_IN, "onnxruntime-slow10", "torch-numpy-peaks"]  # after the built-in ones
    assert runtimes.get_runtime("onnxruntime-slow10").__name__ == "SlowOnnxRuntime"
    # the matrix: its jobs, by its device and precisions
    assert mx.runtime_table()["onnxruntime-slow10"] == ("cpu", ("fp32", "int8"))
    jobs = {(j.runtime, j.precision) for j in mx.derive(models="unetpp", devices={"cpu"})}
    assert {("onnxruntime-slow10", "fp32"), ("onnxruntime-slow10", "int8"), ("torch-numpy-peaks", "fp32")} <= jobs
    assert reads_calibration("onnxruntime-slow10", "int8", "calib_size")
    # diagnose: ONNX Runtime's QDQ int8, inherited
    assert diagnosed_runtimes() == ["onnxruntime", "openvino", "onnxruntime-slow10"]
    # the peaks: the numpy plug-in's own kernels (after the built-in ones), none for slow10 (inherited)
    assert kernel_families() == ("torch", "onnxruntime", "openvino", "torch-numpy-peaks")
    assert "numpy.matmul 1024" in {k.label for k in kernels("fp32")}
    assert "torch-numpy-peaks" not in {k.family for k in kernels("bf16")}
    p = measure("fp32", 1, repeats=2, budget_s=0.2, candidates=[Kernel("torch-numpy-peaks", "MatMul", (64,)),
                                                                Kernel("torch-numpy-peaks", "Conv", (4, 8))])
    assert set(p["candidates"]) == {"numpy.matmul 64"} and p["kernel_details"]["numpy.matmul 64"].startswith("numpy ")
    assert p["refused"] == {"torch-numpy-peaks Conv 3x3 4ch 8x8": "numpy: no Conv kernel"}  # the default label


def test_the_host_reads_the_registry_without_numpy_or_an_engine():
    """Imported with numpy, torch and the engines made unimportable (the host python's case), the
    registry, the run options and the matrix load, a plug-in (slow10.py) included."""
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in ('numpy', 'torch', 'onnxruntime', 'openvino', 'onnx'):\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import json\n"
            "from zoo.runtimes import registry\n"
            "from zoo.stages.config import option\n"
            "from runner.matrix import runtime_table\n"
            "print(json.dumps([list(registry()), list(runtime_table()), list(option('precision').choices)]))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "ZOO_RUNTIME_PLUGINS": str(SLOW10)})
    assert proc.returncode == 0, proc.stderr
    names, table, precisions = json.loads(proc.stdout.strip().splitlines()[-1])
    assert names == table == [*BUILT_IN, "onnxruntime-slow10"] and tuple(precisions) == PRECISIONS
