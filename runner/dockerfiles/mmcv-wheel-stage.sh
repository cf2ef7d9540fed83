#!/bin/sh
# mmcv-wheel-stage.sh SHA256 (the build stage of runner/dockerfiles/mmcv.Dockerfile): put the mmcv
# 2.1.0 wheel for the image's torch into /wheels/torch-<torch>/, for the final stage to install.
#
# Reuse: SHA256 non-empty means `invoke build` offered the host's wheel (runner/mmcv_wheel.sh's
# work/cache/wheels/torch-<torch>/, chosen by runner.docker.host_mmcv_wheel for the torch that
# runner/mmcv-build/requirements.lock pins, which is every OpenMMLab model's torch) as
# build-inputs/mmcv/. It is used when its sha256 is SHA256 (else: error) and its python tag and
# platform fit this interpreter (else: compiled, saying why). Its sha256 is printed to the build log
# and is the image's label io.zoo.mmcv-wheel-sha256.
# Compile: as before, build-essential and mmcv_wheel.sh in a throwaway venv (20-35 minutes on 2
# cores), pip using the build inputs (install-lock.sh's pip.conf/ca.pem/wheels/).
set -eu
WANT="${1-}"
INPUTS="${ZOO_BUILD_INPUTS:-/tmp/build-inputs}"
LOCKS=/opt/zoo/runner/mmcv-build
die() { echo "mmcv-wheel-stage: $*" >&2; exit 1; }
TORCH="$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$LOCKS/requirements.lock")"
[ -n "$TORCH" ] || die "$LOCKS/requirements.lock pins no torch"
TAG="$(python3 -c 'import sys; print("cp%d%d" % sys.version_info[:2])')"
PLATFORM="linux_$(uname -m)"
OUT="/wheels/torch-$TORCH"
mkdir -p "$OUT"

if [ -n "$WANT" ]; then
    set -- "$INPUTS"/mmcv/mmcv-2.1.0-*.whl
    [ "$#" -eq 1 ] && [ -f "$1" ] || die "expected one offered wheel in $INPUTS/mmcv/, found: $*"
    GOT="$(sha256sum "$1" | cut -d' ' -f1)"
    [ "$GOT" = "$WANT" ] || die "$(basename "$1"): sha256 $GOT, expected $WANT"
    case "$(basename "$1")" in
        *"-$TAG-$TAG-$PLATFORM.whl")
            cp "$1" "$OUT/"
            echo "mmcv-wheel-stage: reusing the host's $(basename "$1") for torch $TORCH (sha256 $GOT), no compile"
            exit 0 ;;
        *)
            echo "mmcv-wheel-stage: the host's $(basename "$1") does not fit $TAG/$PLATFORM: compiling" ;;
    esac
fi

# hadolint-style: no pinned versions for Debian's toolchain (as before).
apt-get update
HEADERS="$(python3 -c 'import os, sysconfig; print("" if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else "python3-dev")')"
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends build-essential $HEADERS
rm -rf /var/lib/apt/lists/*
# The torch the wheel is built for (mmcv_wheel.sh reads it from PYTHON): the build's hash lock in
# a venv without pip; the script then builds in its own venv from the same locks and checks the
# sdist's pinned sha256. Both pip runs see the build inputs (zoo-install-lock --exec).
python3 -m venv --without-pip /opt/torchenv
cp "$LOCKS/requirements.lock" /tmp/torch.lock
ZOO_VENV=/opt/torchenv zoo-install-lock /tmp/torch.lock
MMCV_BUILD_ONLY=1 PIP_NO_CACHE_DIR=1 \
    zoo-install-lock --exec bash /opt/zoo/runner/mmcv_wheel.sh /opt/torchenv/bin/python /wheels
set -- "$OUT"/mmcv-2.1.0-*.whl
echo "mmcv-wheel-stage: compiled $(basename "$1") for torch $TORCH (sha256 $(sha256sum "$1" | cut -d' ' -f1))"
