#!/usr/bin/env bash
# Build (once per machine) and install mmcv with its compiled ops for the OpenMMLab models
# (fcn8s, nasfpn). PyPI has no mmcv 2.1.0 wheel for current torch/Python, so it is compiled from
# the sdist: about 15 minutes on 2 idle cores.
#
#   runner/mmcv_wheel.sh PYTHON [WHEEL_DIR]
#
# PYTHON is the model environment's interpreter (its torch decides the build); the wheel is kept
# in WHEEL_DIR/torch-<version>/ (default: $ZOO_CACHE/wheels, else <repo>/work/cache/wheels) and
# reused by every model environment and later runs. The build happens in a throwaway virtual
# environment, because mmcv 2.1.0's setup.py needs setuptools < 70 while torch 2.13 declares
# setuptools >= 77: the model environment keeps its pinned setuptools. Then the wheel is installed
# with --no-deps (mmcv's dependencies are pinned in the model's requirements.txt).
# A flock serialises concurrent builds of the same wheel. MMCV_BUILD_ONLY=1: build/cache the wheel
# and stop (a Docker build stage, where PYTHON has torch but not mmcv's runtime dependencies).
set -euo pipefail

MMCV_VERSION="${MMCV_VERSION:-2.1.0}"
PY="${1:?usage: mmcv_wheel.sh PYTHON [WHEEL_DIR]}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="${2:-${ZOO_CACHE:-$ROOT/work/cache}/wheels}"

TORCH="$("$PY" -c 'import torch; print(torch.__version__)')"
PYTAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
DIR="$BASE/torch-$TORCH"
mkdir -p "$DIR"

find_wheel() { ls "$DIR"/mmcv-"$MMCV_VERSION"-"$PYTAG"-*.whl 2>/dev/null | head -n1 || true; }

exec 9>"$DIR/.lock"
flock 9
WHEEL="$(find_wheel)"
if [ -z "$WHEEL" ]; then
    echo "mmcv_wheel: building mmcv $MMCV_VERSION (ops) for torch $TORCH / $PYTAG into $DIR (about 15 min on 2 cores)" >&2
    BUILD="$(mktemp -d "${TMPDIR:-/tmp}/mmcv-build.XXXXXX")"
    trap 'rm -rf "$BUILD"' EXIT
    "$PY" -m venv "$BUILD/venv"
    BPY="$BUILD/venv/bin/python"
    # The same torch as the model environment (by version; a +cpu local version included).
    TORCH_SPEC="torch==$TORCH"
    "$BPY" -m pip install --progress-bar off "$TORCH_SPEC" wheel ninja numpy ${PIP_TORCH_INDEX:+--extra-index-url "$PIP_TORCH_INDEX"}
    "$BPY" -m pip install --progress-bar off 'setuptools<70'
    MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "$BPY" -m pip wheel --no-build-isolation --no-deps --progress-bar off \
        -w "$BUILD/out" "mmcv==$MMCV_VERSION"
    mv "$BUILD"/out/mmcv-*.whl "$DIR/"
    WHEEL="$(find_wheel)"
    [ -n "$WHEEL" ] || { echo "mmcv_wheel: the build produced no wheel for $PYTAG in $DIR" >&2; exit 1; }
else
    echo "mmcv_wheel: using the cached $WHEEL" >&2
fi
flock -u 9
if [ "${MMCV_BUILD_ONLY:-0}" = 1 ]; then
    echo "mmcv_wheel: $WHEEL" >&2
    exit 0
fi
"$PY" -m pip install --progress-bar off --no-deps --force-reinstall "$WHEEL"
"$PY" -c 'import mmcv, mmcv.ops; from mmcv.ops import nms; print("mmcv", mmcv.__version__, "with compiled ops")'
