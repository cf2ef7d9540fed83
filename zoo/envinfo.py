"""Facts about where a run happens: packages, git commit, CPU, container."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from zoo.paths import ROOT

PACKAGES = ("torch", "onnx", "onnxruntime", "numpy", "opencv-python-headless", "opencv-python",
            "jsonschema", "PyYAML", "openvino", "mmcv", "mmengine", "mmsegmentation", "mmdet", "pycocotools")


def package_versions(names=PACKAGES) -> dict:
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty): ZOO_GIT_COMMIT (set in images at build time) or `git` in the repo."""
    env = os.environ.get("ZOO_GIT_COMMIT")
    if env:
        return env, None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return commit or None, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The instruction-set extensions that decide what reduced precision a CPU runs fast (Linux flags).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
             "amx_int8")


def cpu_isa() -> list[str]:
    """The ISA_FLAGS this CPU has (from /proc/cpuinfo; empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in ISA_FLAGS if f in have]
    except OSError:
        pass
    return []


def cpu_flags_summary() -> str:
    isa = cpu_isa()
    return ", ".join(isa) if isa else "no AVX2/AVX-512/AMX flags found"


def in_container() -> bool:
    return os.environ.get("ZOO_IN_CONTAINER") == "1" or Path("/.dockerenv").exists()


def environment(argv: list[str]) -> dict:
    commit, dirty = git_state()
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": package_versions(), "git_commit": commit, "git_dirty": dirty,
            "in_container": in_container(), "command": [Path(sys.executable).name, "-m", "zoo", *argv]}


def cpu_device(threads: int) -> dict:
    return {"type": "cpu", "name": cpu_name(), "count": 1, "cores": os.cpu_count() or 1,
            "details": {"threads_used": threads, "machine": platform.machine(), "isa": cpu_isa(),
                        "isa_checked": list(ISA_FLAGS)}}  # a checked flag missing from isa: the CPU lacks it
