"""The Ascend runtime without an Ascend machine: the atc command lines it would run, the soc
version read from `npu-smi info`, and the one-line error when the toolkit is missing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from zoo.errors import ZooError
from zoo.runtimes import get_runtime
from zoo.runtimes.ascend_rt import AscendRuntime, atc_command, soc_version_from_npu_smi

NPU_SMI_310P = """\
+--------------------------------------------------------------------------------------------------------+
| npu-smi 23.0.0                                   Version: 23.0.0                                       |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 8       310P3                 | OK              | NA           41                0     / 0             |
| 0       0                     | 0000:3B:00.0    | 0            1593 / 21534                            |
+===============================+=================+======================================================+
| 9       310P3                 | OK              | NA           40                0     / 0             |
| 0       1                     | 0000:86:00.0    | 0            1592 / 21534                            |
+===============================+=================+======================================================+
"""


# a stand-in `atc` answers --version without logging it (the runtime keys its .om folder by it)
ATC_VERSION = 'case "$1" in --version) echo "ATC version 8.0.test"; exit 0;; esac\n'


def test_atc_command_is_the_guides_command_line():
    cmd = atc_command(Path("fcn.onnx"), Path("out/fcn_bs16"), "input", (16, 3, 500, 500), "Ascend310P3")
    assert cmd == ["atc", "--framework=5", "--model=fcn.onnx", "--output=out/fcn_bs16", "--input_format=NCHW",
                   "--input_shape=input:16,3,500,500", "--log=error", "--soc_version=Ascend310P3"]
    assert "--log=debug" in atc_command(Path("m.onnx"), Path("m"), "x", (1, 3, 8, 8), "Ascend310", log="debug")
    with pytest.raises(ValueError, match="static NCHW"):
        atc_command(Path("m.onnx"), Path("m"), "x", (-1, 3, 8, 8), "Ascend310")


def test_soc_version_from_npu_smi():
    assert soc_version_from_npu_smi(NPU_SMI_310P, 8) == "Ascend310P3"
    assert soc_version_from_npu_smi(NPU_SMI_310P, 9) == "Ascend310P3"
    with pytest.raises(ZooError, match="no NPU 0"):
        soc_version_from_npu_smi(NPU_SMI_310P, 0)


def test_compile_per_batch_size_runs_atc_with_the_device_soc(tmp_path, monkeypatch):
    """With a fake `atc` and `npu-smi` on PATH: one .om per batch size, cached."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "atc.log"
    (bin_dir / "atc").write_text(f"#!/bin/sh\n{ATC_VERSION}echo \"$@\" >> {log}\nfor a in \"$@\"; do case $a in --output=*) "
                                 f"touch \"${{a#--output=}}.om\";; esac; done\n")
    (bin_dir / "npu-smi").write_text("#!/bin/sh\ncat <<'EOF'\n" + NPU_SMI_310P + "EOF\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("ZOO_ASCEND_DEVICE", "9")
    from zoo.runtimes.base import ModelArtifacts
    rt = AscendRuntime()
    rt.compile(ModelArtifacts(tmp_path / "m.onnx", ["input"], ["output"], key="k" * 20), tmp_path / "cache")
    om1 = rt._om((1, 3, 64, 64))
    om4 = rt._om((4, 3, 64, 64))
    rt._om((4, 3, 64, 64))  # cached: no second atc call
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and "--input_shape=input:4,3,64,64" in calls[1] and "--soc_version=Ascend310P3" in calls[0]
    assert om1.endswith("Ascend310P3/fp32/bs1.om") and om4.endswith("bs4.om")
    assert all(c.endswith("--precision_mode=must_keep_origin_dtype") for c in calls)
    assert rt.settings()["soc_version"] == "Ascend310P3" and rt.settings()["device_id"] == 9


def test_unavailable_here_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no atc
    assert "atc" in AscendRuntime.unavailable_reason()
    with pytest.raises(ZooError, match=r"runtime 'ascend' is not available: the Ascend toolkit's `atc` is not on PATH"):
        get_runtime("ascend")


def test_cli_selecting_ascend_fails_cleanly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "zoo", "run", "--model", "unetpp", "--backend", "ascend",
                           "--out", str(tmp_path)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: runtime 'ascend' is not available")


# --- reduced precisions, by construction (no NPU here) ------------------------------------------
# Tested: ATC's and AMCT's command lines per precision, the calibration .bin files (real samples),
# the int8 flow with stand-in `atc` and `amct_onnx` executables (what they are given, what is
# cached, the deploy model read back). What ATC/AMCT then produce and how it runs, only an NPU
# with CANN can show.

import os  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from zoo.manifest import load_manifest  # noqa: E402
from zoo.quant.calibration_set import open_calibration  # noqa: E402
from zoo.runtimes.ascend_rt import PRECISION_MODES, amct_command, write_calibration_bins  # noqa: E402
from zoo.runtimes.base import ModelArtifacts  # noqa: E402


def test_atc_precision_modes():
    assert PRECISION_MODES == {"fp32": "must_keep_origin_dtype", "fp16": "force_fp16", "int8": "force_fp16"}
    base = atc_command(Path("m.onnx"), Path("m"), "x", (1, 3, 8, 8), "Ascend310P3")
    for precision, mode in PRECISION_MODES.items():
        cmd = atc_command(Path("m.onnx"), Path("m"), "x", (1, 3, 8, 8), "Ascend310P3", precision_mode=mode)
        assert cmd == base + [f"--precision_mode={mode}"], precision
    with pytest.raises(ValueError, match="unknown ATC precision mode"):
        atc_command(Path("m.onnx"), Path("m"), "x", (1, 3, 8, 8), "Ascend310P3", precision_mode="fp32")


def test_precisions_offered_and_refused():
    assert AscendRuntime.precisions == ("fp32", "fp16", "int8")
    assert AscendRuntime.precision_problem("int8") is None
    assert AscendRuntime.precision_problem("bf16") == "runtime ascend does not run bf16 (it runs: fp32, fp16, int8)"
    assert AscendRuntime.needs_calibration("int8") and not AscendRuntime.needs_calibration("fp16")


def test_amct_command_line(tmp_path):
    cmd = amct_command(Path("m.onnx"), tmp_path / "q" / "model", "input", (1, 3, 96, 96), tmp_path / "calib", 32)
    assert cmd == ["amct_onnx", "calibration", "--model=m.onnx", f"--save_path={tmp_path}/q/model",
                   "--input_shape=input:1,3,96,96", f"--data_dir={tmp_path}/calib", "--data_types=float32",
                   "--batch_num=32"]
    with pytest.raises(ValueError, match="static NCHW"):
        amct_command(Path("m.onnx"), Path("q"), "input", (-1, 3, 96, 96), Path("c"), 1)
    with pytest.raises(ValueError, match="at least one calibration batch"):
        amct_command(Path("m.onnx"), Path("q"), "input", (1, 3, 96, 96), Path("c"), 0)
    with pytest.raises(ZooError, match=r"AMCT accepts only letters.*not 'my data'"):
        amct_command(Path("m.onnx"), Path("q"), "input", (1, 3, 96, 96), Path("/tmp/my data/calib"), 1)


@pytest.fixture(scope="module")
def unetpp_calibration(tmp_path_factory):
    m = load_manifest("unetpp")
    return m, open_calibration(m, m.adapter(), None, None, 32, "minmax", 0, False, tmp_path_factory.mktemp("cal"))


def test_calibration_bins_are_the_calibration_samples(unetpp_calibration, tmp_path):
    _, cal = unetpp_calibration
    shape, n = write_calibration_bins(cal, tmp_path / "calib")
    files = sorted((tmp_path / "calib").iterdir())
    assert shape == (1, 3, 96, 96) and n == len(cal) == len(files) == 6
    assert [f.name for f in files] == [f"calib_{i:05d}.bin" for i in range(6)]
    for f, x in zip(files, cal.inputs()):
        assert f.stat().st_size == 3 * 96 * 96 * 4
        np.testing.assert_array_equal(np.fromfile(f, np.float32).reshape(shape)[0], x)


def _deploy_model_writer(path: Path) -> str:
    """Python source of a stand-in amct_onnx: logs its arguments and the .bin files it was given,
    and writes <save_path>_deploy_model.onnx holding AMCT's quantize/dequantize operators."""
    return f"""#!{sys.executable}
import os, sys
from onnx import TensorProto, helper, save
args = dict(a[2:].split("=", 1) for a in sys.argv[2:])
bins = sorted(os.listdir(args["data_dir"]))
with open({str(path)!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + " | " + ",".join(bins) + " | " + str(os.path.getsize(os.path.join(args["data_dir"], bins[0]))) + "\\n")
g = helper.make_graph([helper.make_node("AscendQuant", ["x"], ["q"], domain="amct"),
                       helper.make_node("AscendDequant", ["q"], ["y"], domain="amct")], "deploy",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
save(helper.make_model(g), args["save_path"] + "_deploy_model.onnx")
save(helper.make_model(g), args["save_path"] + "_fake_quant_model.onnx")
"""


def _fake_toolkit(tmp_path, monkeypatch, amct=True):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "tools.log"
    (bin_dir / "atc").write_text(f"#!/bin/sh\n{ATC_VERSION}echo \"$@\" >> {log}\nfor a in \"$@\"; do case $a in --output=*) "
                                 f"touch \"${{a#--output=}}.om\";; esac; done\n")
    if amct:
        (bin_dir / "amct_onnx").write_text(_deploy_model_writer(log))
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("ZOO_ASCEND_SOC", "Ascend310P3")
    return log


def test_int8_quantizes_with_amct_then_compiles_the_deploy_model(unetpp_calibration, tmp_path, monkeypatch):
    m, cal = unetpp_calibration
    log = _fake_toolkit(tmp_path, monkeypatch)
    onnx_path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 96, 96])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 96, 96])])), onnx_path)
    arts = ModelArtifacts(onnx_path, [m.input["name"]], [m.output["name"]], key="k" * 20, calibration=cal)
    cache = tmp_path / "cache"
    rt = AscendRuntime(precision="int8")
    compiled = rt.compile(arts, cache)
    deploy = Path(compiled.extra["amct_deploy_model"])
    assert deploy.name == "deploy_model.onnx" and deploy.parent.parent == cache / "quantized" / "ascend"
    assert rt.executed_precision() == "int8"
    rt._om((4, 3, 96, 96))
    amct_call, atc_call = log.read_text().splitlines()
    assert amct_call.startswith(f"calibration --model={onnx_path} --save_path=")
    assert f"--input_shape={m.input['name']}:1,3,96,96 " in amct_call and "--data_types=float32 --batch_num=6 |" in amct_call
    assert amct_call.endswith(" | " + ",".join(f"calib_{i:05d}.bin" for i in range(6)) + f" | {3 * 96 * 96 * 4}")
    assert f"--model={deploy}" in atc_call and atc_call.endswith("--precision_mode=force_fp16")
    assert f"/Ascend310P3/int8-{deploy.parent.name}/bs4" in atc_call
    assert not list(cache.glob("zoo-amct-*"))  # the .bin files were temporary
    # cached: a second int8 compile does not run AMCT again; fp16 compiles the exported graph
    AscendRuntime(precision="int8").compile(arts, cache)
    fp16 = AscendRuntime(precision="fp16")
    fp16.compile(arts, cache)
    fp16._om((1, 3, 96, 96))
    calls = log.read_text().splitlines()
    assert len(calls) == 3 and f"--model={onnx_path} " in calls[2] and calls[2].endswith("--precision_mode=force_fp16")
    assert "/Ascend310P3/fp16/bs1" in calls[2] and fp16.executed_precision() == "fp16"


def test_int8_needs_amct_and_samples_and_a_quantized_deploy_model(unetpp_calibration, tmp_path, monkeypatch):
    m, cal = unetpp_calibration
    _fake_toolkit(tmp_path, monkeypatch, amct=False)
    arts = ModelArtifacts(tmp_path / "m.onnx", ["input"], ["output"], calibration=cal)
    with pytest.raises(ZooError, match=r"int8 needs AMCT's `amct_onnx` on PATH"):
        AscendRuntime(precision="int8").compile(arts, tmp_path / "cache")
    with pytest.raises(ZooError, match="int8 needs the run's calibration samples"):
        AscendRuntime(precision="int8").compile(ModelArtifacts(tmp_path / "m.onnx", ["input"], ["output"]), tmp_path)
    with pytest.raises(ZooError, match="--keep-fp32 is not supported"):
        AscendRuntime(precision="fp16").compile(ModelArtifacts(tmp_path / "m.onnx", ["i"], ["o"], keep_fp32=("n",)), tmp_path)
    rt = AscendRuntime(precision="int8")  # a deploy model without AscendQuant is not an int8 run
    rt.compiled, rt.graph = object(), tmp_path / "plain.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])), rt.graph)
    with pytest.raises(ZooError, match="holds no AscendQuant operator"):
        rt.executed_precision()


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_cli_reduced_precision_without_the_toolkit_fails_cleanly(tmp_path, precision):
    proc = subprocess.run([sys.executable, "-m", "zoo", "run", "--model", "unetpp", "--runtime", "ascend",
                           "--precision", precision, "--out", str(tmp_path)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1
    assert lines[0].startswith("error: runtime 'ascend' is not available: the Ascend toolkit's `atc` is not on PATH")
