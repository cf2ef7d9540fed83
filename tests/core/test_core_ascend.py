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
    (bin_dir / "atc").write_text(f"#!/bin/sh\necho \"$@\" >> {log}\nfor a in \"$@\"; do case $a in --output=*) "
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
    assert om1.endswith("Ascend310P3/bs1.om") and om4.endswith("bs4.om")
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
