"""Ascend NPU: compile the ONNX file with the toolkit's `atc` (the guides' command line, one static
.om per batch size, soc version from the device) and run it through the `ais_bench` Python API.

Available only where the CANN toolkit is installed (`atc` on PATH after sourcing
`/usr/local/Ascend/ascend-toolkit/set_env.sh`) and the ais_bench wheel is importable; otherwise
selecting it is a one-line error saying which is missing. Settings: ZOO_ASCEND_DEVICE (device id,
default 0), ZOO_ASCEND_SOC (soc version, default: read from `npu-smi info`).

Precisions (--precision) set ATC's --precision_mode (PRECISION_MODES): fp32 keeps the graph's
float32 (must_keep_origin_dtype), fp16 is the guides' default (force_fp16). int8 first quantizes
the graph with AMCT's command line (`amct_onnx calibration`, post-training quantization) over the
run's calibration samples written as .bin files, then ATC compiles AMCT's deploy model; the
layers AMCT left unquantized run fp16. bf16 is not offered: the only ATC bf16 modes
(allow_mix_precision_bf16, allow_fp32_to_bf16) are automatic mixed precision, on Atlas A2/A3
socs only, and the soc is known only once the device is read."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import ZooError, one_line
from zoo.fileutil import file_digest
from zoo.runtimes.base import Compiled, ModelArtifacts, Runtime

if TYPE_CHECKING:
    import numpy as np

SET_ENV = "/usr/local/Ascend/ascend-toolkit/set_env.sh"

# ATC --precision_mode per --precision. The ATC reference (CANN 8.0.RC2, "--precision_mode",
# https://www.hiascend.com/doc_center/source/zh/canncommercial/80RC2/devaids/auxiliarydevtool/atlasatc_16_0099.html;
# the same list in https://www.hiascend.com/document/detail/zh/canncommercial/latest/devaids/aoe/aoerc_16_0056.html):
#   force_fp16 (the default for inference): fp16 wherever an operator supports fp16 and fp32;
#   force_fp32 / cube_fp16in_fp32out: matrix operators (Conv, MatMul) still PREFER float16 inputs
#     with float32 outputs, so it is not an fp32 run;
#   must_keep_origin_dtype: keeps the graph's own precision (float32 here); an operator whose
#     AI Core kernel lacks float32 falls back to a float32 AI CPU kernel, or ATC fails (older
#     releases: "cannot be used" then) -- a clear failure rather than a silent fp16 run.
# So fp32 -> must_keep_origin_dtype. int8: AMCT's deploy model, its unquantized layers at fp16.
PRECISION_MODES = {"fp32": "must_keep_origin_dtype", "fp16": "force_fp16", "int8": "force_fp16"}
# AMCT's --data_dir accepts letters, digits, '_', '-', '.' in a path (AMCT reference, "--data_dir").
_AMCT_PATH_PART = re.compile(r"^[A-Za-z0-9_.-]*$")


def atc_command(onnx_path: Path, output_stem: Path, input_name: str, shape: tuple[int, ...],
                soc_version: str, log: str = "error", precision_mode: str | None = None) -> list[str]:
    """The guides' ATC invocation for one static input shape (NCHW), e.g.
    atc --framework=5 --model=m.onnx --output=m_bs1 --input_format=NCHW
        --input_shape="input:1,3,500,500" --log=error --soc_version=Ascend310P3
    plus --precision_mode=<mode> when given (PRECISION_MODES)."""
    if len(shape) != 4 or any(int(d) < 1 for d in shape):
        raise ValueError(f"atc needs a static NCHW shape, got {shape}")
    if precision_mode is not None and precision_mode not in set(PRECISION_MODES.values()):
        raise ValueError(f"unknown ATC precision mode {precision_mode!r}")
    cmd = ["atc", "--framework=5", f"--model={onnx_path}", f"--output={output_stem}", "--input_format=NCHW",
           f"--input_shape={input_name}:{','.join(str(int(d)) for d in shape)}", f"--log={log}",
           f"--soc_version={soc_version}"]
    return cmd + ([f"--precision_mode={precision_mode}"] if precision_mode else [])


def amct_command(onnx_path: Path, save_prefix: Path, input_name: str, shape: tuple[int, ...],
                 data_dir: Path, batch_num: int) -> list[str]:
    """AMCT's post-training quantization command line for an ONNX model with one input, e.g.
    amct_onnx calibration --model=m.onnx --save_path=out/model --input_shape=input:1,3,96,96
        --data_dir=calib/ --data_types=float32 --batch_num=32
    Options as in the AMCT reference, command-line options overview ("amct_xxx calibration
    param1=value1 ..."; --model, --save_path, --input_shape, --data_dir, --data_types, --batch_num):
    https://www.hiascend.com/document/detail/zh/CANNCommunityEdition/latest/devaids/amct/atlasamct_16_0312.html
    and https://hiascend.com/document/detail/zh/canncommercial/700/devtools/auxiliarydevtool/atlasamctonnx_16_0032.html;
    --input_shape "name:n,c,h,w" and --data_dir (each .bin holds one array of --input_shape's
    shape, files in ascending name order, --batch_num of them used) as in .../atlasamct_16_0346.html
    and .../atlasamct_16_0349.html. The quotes the reference puts around values are shell quoting,
    not needed in an argument list. save_path is a folder plus a model-name prefix; AMCT writes
    <prefix>_deploy_model.onnx (for ATC) and a fake-quant model beside it."""
    if len(shape) != 4 or any(int(d) < 1 for d in shape):
        raise ValueError(f"amct needs a static NCHW shape, got {shape}")
    if batch_num < 1:
        raise ValueError(f"amct needs at least one calibration batch, got {batch_num}")
    bad = [part for part in Path(data_dir).parts if part != "/" and not _AMCT_PATH_PART.match(part)]
    if bad:
        raise ZooError(f"{data_dir}: AMCT accepts only letters, digits, '_', '-' and '.' in --data_dir "
                       f"(not {bad[0]!r}): use a cache folder with such a path")
    return ["amct_onnx", "calibration", f"--model={onnx_path}", f"--save_path={save_prefix}",
            f"--input_shape={input_name}:{','.join(str(int(d)) for d in shape)}", f"--data_dir={data_dir}",
            "--data_types=float32", f"--batch_num={int(batch_num)}"]


def write_calibration_bins(calibration, out_dir: Path) -> tuple[tuple[int, ...], int]:
    """Each calibration sample as one raw float32 .bin of shape (1, C, H, W) (C order, as
    numpy's tofile writes it), named calib_00000.bin, ... so that their name order is the
    samples' order; returns (that shape, how many)."""
    import numpy as np
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shape, n = None, 0
    for n, x in enumerate(calibration.inputs(), 1):
        x = np.ascontiguousarray(x, dtype=np.float32)[None]
        if shape is None:
            shape = x.shape
        elif x.shape != shape:
            raise ZooError(f"calibration sample {n} has shape {x.shape[1:]}, the first {shape[1:]}: AMCT needs one shape")
        x.tofile(out_dir / f"calib_{n - 1:05d}.bin")
    if shape is None:
        raise ZooError("no calibration samples to write for AMCT")
    return tuple(int(d) for d in shape), n


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


def amct_version() -> str:
    """The installed AMCT's version (part of the deploy model's cache key), 'unknown' if unread."""
    from importlib import metadata
    try:
        return metadata.version("amct_onnx")
    except metadata.PackageNotFoundError:
        return "unknown"


class AscendRuntime(Runtime):
    name = "ascend"
    accelerator = "NPU"
    device_type = "npu"
    precisions = ("fp32", "fp16", "int8")

    def __init__(self, threads: int | None = None, precision: str = "fp32"):
        super().__init__(threads, precision)
        self.device_id = int(os.environ.get("ZOO_ASCEND_DEVICE", "0"))
        self.soc = os.environ.get("ZOO_ASCEND_SOC") or None
        self.sessions: dict[int, object] = {}
        self.om_paths: dict[int, str] = {}
        self.om_cached: dict[int, bool] = {}  # batch size -> its .om was reused from the cache

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
        """Where the .om files go (one per batch size, compiled on first use), per graph, atc
        version, soc and precision; int8 first builds AMCT's deploy model (amct_deploy_model)."""
        if artifacts.onnx_path is None:
            raise ZooError("ascend: needs an ONNX file")
        if artifacts.keep_fp32:
            raise ZooError(f"{self.name}: --keep-fp32 is not supported (ATC's --keep_dtype is not wired)")
        self.artifacts = artifacts
        self.graph = Path(artifacts.onnx_path)
        extra = {"device_id": self.device_id, "precision_mode": PRECISION_MODES[self.precision]}
        t0 = time.perf_counter()
        folder = self.precision
        if self.needs_calibration(self.precision):
            graph, made = self.quantize(artifacts, Path(cache))
            self.graph = Path(graph)
            folder = f"{self.precision}-{self.graph.parent.name}"
            extra.update(made)
        # the toolkit's version is part of the folder: an .om compiled by another atc is another model
        toolkit = hashlib.sha256(self.version().encode()).hexdigest()[:8]
        graph_key = artifacts.key or (file_digest(Path(artifacts.onnx_path)) if Path(artifacts.onnx_path).is_file()
                                      else "model")
        self.dir = Path(cache) / "ascend" / f"{graph_key[:20]}-atc{toolkit}" / self.soc_version() / folder
        self.compiled = Compiled(path=self.dir, cached=False, seconds=time.perf_counter() - t0,
                                 extra={**extra, "soc_version": self.soc, "om_per_batch": self.om_paths,
                                        "om_cached_per_batch": self.om_cached})
        return self.compiled

    def quantize(self, artifacts: ModelArtifacts, cache: Path) -> tuple[Path | None, dict]:
        """int8: AMCT's deploy model of the exported graph (amct_deploy_model), which ATC compiles."""
        if not self.needs_calibration(self.precision):
            return super().quantize(artifacts, cache)
        deploy = self.amct_deploy_model(artifacts, Path(cache))
        return deploy, {"amct_deploy_model": str(deploy)}

    def amct_deploy_model(self, artifacts: ModelArtifacts, cache: Path) -> Path:
        """AMCT's deploy ONNX of the graph, quantized on the run's calibration samples (one .bin
        each, batch 1), a zoo.cache entry `quantized/ascend/<key>/` keyed by the graph, the
        calibration's key and AMCT's version; the .bin files live only while AMCT runs."""
        from zoo.cache import ensure_entry
        if artifacts.calibration is None:
            raise ZooError(f"{self.name}: int8 needs the run's calibration samples")
        if shutil.which("amct_onnx") is None:
            raise ZooError(f"{self.name}: int8 needs AMCT's `amct_onnx` on PATH (the CANN toolkit's AMCT for ONNX)")
        parts = {"onnx": file_digest(Path(artifacts.onnx_path)), "calibration": artifacts.calibration.key(),
                 "amct": amct_version(), "format": 1}
        entry = cache / "quantized" / "ascend" / hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]

        def build(tmp: Path) -> None:
            with tempfile.TemporaryDirectory(prefix="zoo-amct-", dir=cache) as work:
                data = Path(work) / "calib"
                shape, n = write_calibration_bins(artifacts.calibration, data)
                cmd = amct_command(artifacts.onnx_path, tmp / "model", artifacts.input_names[0], shape, data, n)
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work)  # cwd: AMCT's log folder
            deploy = sorted(tmp.glob("*deploy*.onnx"))
            if proc.returncode != 0 or not deploy:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
                raise ZooError(f"{artifacts.onnx_path}: amct_onnx calibration failed (exit {proc.returncode}): {tail[0][:300]}")
            deploy[0].rename(tmp / "deploy_model.onnx")

        ensure_entry(entry, build)
        return entry / "deploy_model.onnx"

    def executed_precision(self) -> str:
        """int8 only when AMCT's deploy model holds its quantize operators (AscendQuant), read
        back from the file; fp32/fp16 are what ATC was told (the .om is not read back here)."""
        if self.precision != "int8" or self.compiled is None:
            return self.precision
        import onnx
        ops = {n.op_type for n in onnx.load(str(self.graph), load_external_data=False).graph.node}
        if "AscendQuant" not in ops:
            raise ZooError(f"{self.graph}: AMCT's deploy model holds no AscendQuant operator: it would not run int8")
        return "int8"

    @contextmanager
    def _om_held(self, shape: tuple[int, ...]) -> Iterator[str]:
        """The .om for this static shape, compiled by atc when missing, while its folder's lock is
        held: the folder is a zoo.cache sealed folder (atc writes the .om itself), so a damaged or
        half-written .om is removed with a warning and compiled again instead of being loaded."""
        from zoo.cache import sealed_folder
        bs = int(shape[0])
        stem = self.dir / f"bs{bs}"
        om = stem.with_suffix(".om")
        with sealed_folder(self.dir):
            if not om.is_file():
                cmd = atc_command(self.graph, stem, self.artifacts.input_names[0], shape, self.soc_version(),
                                  precision_mode=PRECISION_MODES[self.precision])
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0 or not om.is_file():
                    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no output"]
                    raise ZooError(f"{self.artifacts.onnx_path}: atc failed for batch {bs} (exit {proc.returncode}): "
                                   f"{tail[0][:300]}")
                self.compiled.seconds += time.perf_counter() - t0
                self.om_cached[bs] = False
            else:
                self.om_cached.setdefault(bs, True)
            self.compiled.cached = all(self.om_cached.values())
            self.om_paths[bs] = str(om)
            yield str(om)

    def _om(self, shape: tuple[int, ...]) -> str:
        """The .om for this static shape (see _om_held), compiled once per batch size."""
        with self._om_held(shape) as om:
            return om

    def load(self) -> None:
        pass  # sessions are created per batch size on first use (one static .om each)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np
        x = np.ascontiguousarray(feeds[self.artifacts.input_names[0]])
        bs = int(x.shape[0])
        if bs not in self.sessions:
            from ais_bench.infer.interface import InferSession
            with self._om_held(tuple(x.shape)) as om:  # loaded while no other run can rebuild it
                self.sessions[bs] = InferSession(self.device_id, om)
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
