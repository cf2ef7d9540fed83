#!/usr/bin/env bash
# Compiled dependency and patch of the NAS-FPN environment. Called by `invoke setup --model nasfpn`
# (and the Dockerfile) as: setup.sh VENV_PYTHON.
#  1. mmcv 2.1.0 with ops, built once per machine and cached (runner/mmcv_wheel.sh: the sdist's
#     pinned sha256 is checked before it is built, the build venv installed from hash locks);
#  2. patches/mmcv-2.1.0-merge_cells-onnx.patch applied to the installed mmcv: NAS-FPN's merge
#     cells compute max-pool kernel sizes from traced shapes, which ONNX export cannot take.
set -euo pipefail
ROOT="${ZOO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
PY="${1:?usage: setup.sh VENV_PYTHON}"
bash "$ROOT/runner/mmcv_wheel.sh" "$PY"
SITE="$("$PY" -c 'import mmcv, os; print(os.path.dirname(os.path.dirname(mmcv.__file__)))')"
for p in "$ROOT"/models/nasfpn/patches/*.patch; do
    if patch -p1 -d "$SITE" -R --dry-run -s -f < "$p" > /dev/null 2>&1; then
        echo "patch $(basename "$p"): already applied in $SITE" >&2
    else
        patch -p1 -d "$SITE" --forward --no-backup-if-mismatch < "$p"
    fi
done
