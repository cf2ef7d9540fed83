#!/usr/bin/env bash
# Compiled dependency of the FCN-8s environment: mmcv 2.1.0 with ops, built once per machine and
# cached (runner/mmcv_wheel.sh: the sdist's pinned sha256 is checked before it is built, the build
# venv installed from hash locks). Called by `invoke setup --model fcn8s` as: setup.sh VENV_PYTHON.
set -euo pipefail
ROOT="${ZOO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
exec bash "$ROOT/runner/mmcv_wheel.sh" "$1"
