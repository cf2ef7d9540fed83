"""Ascend NPU: compile the ONNX file with the toolkit's `atc` (the guides' command line, one static
.om per batch size, soc version from the device) and run it through the `ais_bench` Python API.

Available only where the CANN toolkit is installed (`atc` on PATH after sourcing
`/usr/local/Ascend/ascend-toolkit/set_env.sh`) and the ais_bench wheel is importable; otherwise
selecting it is a one-line error saying which is missing. Settings: ZOO_ASCEND_DEVICE (device id,
default 0), ZOO_ASCEND_SOC (soc version, default: read from `npu-smi info`)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from zoo.errors import ZooError, one_line
from zoo.runtimes.base import Compiled, ModelArtifacts, Runtime

SET_ENV = "/usr/local/Ascend/ascend-toolkit/set_env.sh"


def atc_command(onnx_path: Path, output_stem: Path, input_name: str, shape: tuple[int, ...],
                soc_version: str, log: str = "error") -> list[str]:
    """The guides' ATC invocation for one static input shape (NCHW), e.g.
    atc --framework=5 --model=m.onnx --output=m_bs1 --input_format=NCHW
        --input_shape="input:1,3,500,500" --log=error --soc_version=Ascend310P3"""
    if len(shape) != 4 or any(int(d) < 1 for d in shape):
        raise ValueError(f"atc needs a static NCHW shape, got {shape}")
    return ["atc", "--framework=5", f"--model={onnx_path}", f"--output={output_stem}", "--input_format=NCHW",
            f"--input_shape={input_name}:{','.join(str(int(d)) for d in shape)}", f"--log={log}",
            f"--soc_version={soc_version}"]


def soc_version_from_npu_smi(text: str, device: int = 0) -> str:
    """The soc version ('Ascend310P3', 'Ascend910B3', 'Ascend310') of an NPU from `npu-smi info`:
    the Name column of the row of NPU `device` (first line of each NPU's two-line block)."""
    expect_npu_row = False  # each NPU's block starts right after a "+====" separator line
    for line in text.splitlines():
        if line.startswith("+===="):
            expect_npu_row = True
            continue
        if not expect_npu_row or not line.startswith("|"):
            continue
        expect_npu_row = False
        words = line.strip("|").split("|")[0].split()
        if len(words) >= 2 and words[0].isdigit() and int(words[0]) == device:
            return words[1] if words[1].startswith("Ascend") else f"Ascend{words[1]}"
    raise ZooError(f"npu-smi info lists no NPU {device}")


class AscendRuntime(Runtime):
    name = "ascend"
    device_type = "npu"

    def __init__(self, threads: int | None = None, precision: str = "fp32"):
        super().__init__(threads, precision)
        self.device_id = int(os.environ.get("ZOO_ASCEND_DEVICE", "0"))
        self.soc = os.environ.get("ZOO_ASCEND_SOC") or None
        self.sessions: dict[int, object] = {}
        self.om_paths: dict[int, str] = {}

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if shutil.which("atc") is None:
            return f"the Ascend toolkit's `atc` is not on PATH (install CANN and `source {SET_ENV}`)"
        if importlib.util.find_spec("ais_bench") is None:
            return "the ais_bench Python API is not installed (pip install the ais_bench wheel of the toolkit)"
        return None

    @classmethod
    def version(cls) -> str:
        try:
            out = subprocess.run(["atc", "--version"], capture_output=True, text=True, timeout=60).stdout
            return out.strip().splitlines()[-1] if out.strip() else "unknown"
        except (OSError, subprocess.SubprocessError):
            return "unknown"

    def soc_version(self) -> str:
        if self.soc is None:
            try:
                text = subprocess.run(["npu-smi", "info"], capture_output=True, text=True, timeout=60, check=True).stdout
            except (OSError, subprocess.SubprocessError) as exc:
                raise ZooError(f"cannot read the soc version: npu-smi info failed ({one_line(exc)[:200]}); "
                               f"set ZOO_ASCEND_SOC") from None
            self.soc = soc_version_from_npu_smi(text, self.device_id)
        return self.soc

    def compile(self, artifacts: ModelArtifacts, cache: Path) -> Compiled:
        if artifacts.onnx_path is None:
            raise ZooError("ascend: needs an ONNX file")
        self.artifacts = artifacts
        self.dir = Path(cache) / "ascend" / (artifacts.key or "model")[:20] / self.soc_version()
        self.compiled = Compiled(path=self.dir, cached=False, seconds=0.0,
                                 extra={"device_id": self.device_id, "soc_version": self.soc, "om_per_batch": self.om_paths})
        return self.compiled

    def _om(self, shape: tuple[int, ...]) -> str:
        """The .om for this static shape: compiled by atc once, cached by batch size."""
        bs = int(shape[0])
        stem = self.dir / f"bs{bs}"
        om = stem.with_suffix(".om")
        if not om.is_file():
            self.dir.mkdir(parents=True, exist_ok=True)
            cmd = atc_command(self.artifacts.onnx_path, stem, self.artifacts.input_names[0], shape, self.soc_version())
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0 or not om.is_file():
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
                raise ZooError(f"{self.artifacts.onnx_path}: atc failed for batch {bs} (exit {proc.returncode}): {tail[0][:300]}")
            self.compiled.seconds += time.perf_counter() - t0
        self.om_paths[bs] = str(om)
        return str(om)

    def load(self) -> None:
        pass  # sessions are created per batch size on first use (one static .om each)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(feeds[self.artifacts.input_names[0]])
        bs = int(x.shape[0])
        if bs not in self.sessions:
            from ais_bench.infer.interface import InferSession
            self.sessions[bs] = InferSession(self.device_id, self._om(tuple(x.shape)))
        outs = self.sessions[bs].infer([x])
        return dict(zip(self.artifacts.output_names, outs))

    def device_info(self) -> dict | None:
        return {"type": "npu", "name": self.soc_version(), "count": 1, "details": {"device_id": self.device_id}}

    def close(self) -> None:
        for s in self.sessions.values():
            free = getattr(s, "free_resource", None)
            if free:
                free()
        self.sessions.clear()
