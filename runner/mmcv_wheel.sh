#!/usr/bin/env bash
# Build (once per machine) and install mmcv with its compiled ops for the OpenMMLab models
# (fcn8s, nasfpn). PyPI has no mmcv 2.1.0 wheel for current torch/Python, so it is compiled from
# the sdist: about 15 minutes on 2 idle cores.
#
#   runner/mmcv_wheel.sh PYTHON [WHEEL_DIR]
#
# PYTHON is the model environment's interpreter (its torch decides the build); the wheel is kept
# in WHEEL_DIR/torch-<version>/ (default: $ZOO_CACHE/wheels, else <repo>/work/cache/wheels) and
# reused by every model environment and later runs. Then it is installed with --no-deps (mmcv's
# dependencies are pinned in the model's requirements.lock).
#
# Supply chain: the sdist mmcv-2.1.0.tar.gz is downloaded by this script (pip download, the
# pinned sha256 as a --require-hashes requirement, so pip refuses another file before running any
# of it) and its sha256 is checked against MMCV_SDIST_SHA256 below BEFORE it is built; a mismatch
# is a one-line error, exit 1. MMCV_SDIST=FILE uses a local copy instead of downloading it (same
# check). The build happens in a throwaway virtual environment installed with --require-hashes
# from runner/mmcv-build/requirements.lock (torch, numpy, ninja, wheel) and then
# runner/mmcv-build/setuptools.lock (mmcv 2.1.0's setup.py needs setuptools < 70 while torch 2.13
# declares setuptools >= 77; the model environment keeps its own pinned setuptools). Regenerate
# both with `python3 runner/lock.py mmcv-build`.
# A flock serialises concurrent builds of the same wheel. MMCV_BUILD_ONLY=1: build/cache the wheel
# and stop (a Docker build stage, where PYTHON has torch but not mmcv's runtime dependencies).
# PIP_TORCH_INDEX=URL: an extra index for the torch CPU wheel (the Docker build stage).
set -euo pipefail

MMCV_VERSION=2.1.0
# sha256 of mmcv-2.1.0.tar.gz as the package index serves it.
MMCV_SDIST_SHA256=d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f
PY="${1:?usage: mmcv_wheel.sh PYTHON [WHEEL_DIR]}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="${2:-${ZOO_CACHE:-$ROOT/work/cache}/wheels}"
LOCKS="$ROOT/runner/mmcv-build"

die() { echo "mmcv_wheel: $*" >&2; exit 1; }

# check_sdist FILE: the pinned sha256, else a one-line error (nothing of FILE has run yet).
check_sdist() {
    [ -f "$1" ] || die "$1: sdist not found"
    local got
    got="$(sha256sum "$1" | cut -d' ' -f1)"
    [ "$got" = "$MMCV_SDIST_SHA256" ] \
        || die "$1: sha256 $got does not match the pinned sha256 $MMCV_SDIST_SHA256 of mmcv-$MMCV_VERSION.tar.gz: refusing to build it"
}

TORCH="$("$PY" -c 'import torch; print(torch.__version__)')"
PYTAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
DIR="$BASE/torch-$TORCH"
mkdir -p "$DIR"

find_wheel() { ls "$DIR"/mmcv-"$MMCV_VERSION"-"$PYTAG"-*.whl 2>/dev/null | head -n1 || true; }

exec 9>"$DIR/.lock"
flock 9
WHEEL="$(find_wheel)"
if [ -z "$WHEEL" ]; then
    # A local sdist is checked before anything else happens.
    if [ -n "${MMCV_SDIST:-}" ]; then
        check_sdist "$MMCV_SDIST"
    fi
    LOCKED_TORCH="$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$LOCKS/requirements.lock")"
    [ "$LOCKED_TORCH" = "$TORCH" ] \
        || die "$PY has torch $TORCH but $LOCKS/requirements.lock pins torch $LOCKED_TORCH (python3 runner/lock.py mmcv-build)"
    echo "mmcv_wheel: building mmcv $MMCV_VERSION (ops) for torch $TORCH / $PYTAG into $DIR (about 15 min on 2 cores)" >&2
    BUILD="$(mktemp -d "${TMPDIR:-/tmp}/mmcv-build.XXXXXX")"
    trap 'rm -rf "$BUILD"' EXIT
    "$PY" -m venv "$BUILD/venv"
    BPY="$BUILD/venv/bin/python"
    INDEX=(${PIP_TORCH_INDEX:+--extra-index-url "$PIP_TORCH_INDEX"})
    "$BPY" -m pip install --progress-bar off --require-hashes --only-binary :all: "${INDEX[@]}" \
        -r "$LOCKS/requirements.lock"
    "$BPY" -m pip install --progress-bar off --require-hashes --only-binary :all: \
        -r "$LOCKS/setuptools.lock"
    if [ -n "${MMCV_SDIST:-}" ]; then
        SDIST="$MMCV_SDIST"
    else
        printf 'mmcv==%s --hash=sha256:%s\n' "$MMCV_VERSION" "$MMCV_SDIST_SHA256" > "$BUILD/sdist.txt"
        "$BPY" -m pip download --progress-bar off --no-deps --no-binary :all: --no-build-isolation \
            --require-hashes -r "$BUILD/sdist.txt" -d "$BUILD/sdist"
        SDIST="$BUILD/sdist/mmcv-$MMCV_VERSION.tar.gz"
    fi
    check_sdist "$SDIST"
    MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "$BPY" -m pip wheel --no-build-isolation --no-deps --progress-bar off \
        -w "$BUILD/out" "$SDIST"
    mv "$BUILD"/out/mmcv-*.whl "$DIR/"
    WHEEL="$(find_wheel)"
    [ -n "$WHEEL" ] || die "the build produced no wheel for $PYTAG in $DIR"
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
