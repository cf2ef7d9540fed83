#!/usr/bin/env bash
# Every model's built-in run, the same command lines each time, so that a refactor can be shown
# not to change behaviour: run it on the old commit and on the new one, then
#   invoke compare OLD_RESULTS NEW_RESULTS --accuracy-only
# (accuracy figures matched per model / options / runtime; a refactor must give 0 regressions,
# and in fact the same floats). Models without a built-in checkpoint use random-weight
# checkpoints with calibrated BatchNorm (benchmarks/random_weights.py): their figures are
# meaningless as accuracy but exact as a fingerprint of the predictions.
#
#   benchmarks/behaviour_baseline.sh CHECKOUT RESULTS_DIR [WEIGHTS_DIR]
# CHECKOUT: the code to run (a clone at the commit to test); the model environments are this
# repository's .venvs/ (invoke setup). NAS-FPN also writes its COCO results to
# RESULTS_DIR/../nasfpn_dets.json (compare the files with cmp).
set -euo pipefail
SRC=$(cd "$1" && pwd); OUT=$(mkdir -p "$2" && cd "$2" && pwd)
HERE=$(cd "$(dirname "$0")/.." && pwd)
W=$(mkdir -p "${3:-$HERE/work/baseline-weights}" && cd "${3:-$HERE/work/baseline-weights}" && pwd)
py() { PYTHONPATH="$SRC" "$HERE/.venvs/$1/bin/python" "${@:2}"; }
cd "$SRC"
for m in erfnet fastscnn fcn8s nasfpn; do
  [ -f "$W/$m.pth" ] || py "$m" benchmarks/random_weights.py "$m" "$W/$m.pth"
done
common=(--no-peak --iters 3 --warmup 1 --time-budget 2 --out "$OUT")
run() { local m=$1; shift; echo "== $m $*"; py "$m" -m zoo run --model "$m" "${common[@]}" "$@" 2>&1 | tail -1; }
run unetpp --batch-sizes 1,4
run unetpp --runtime torch --batch-sizes 4
run unetpp --runtime openvino --batch-sizes 4
run unetpp --option upsample=nearest --batch-sizes 4
run erfnet --weights "$W/erfnet.pth" --batch-sizes 1
run erfnet --weights "$W/erfnet.pth" --batch-sizes 1 --option bn_weight_clamp=true
run fastscnn --weights "$W/fastscnn.pth" --batch-sizes 1 --option export_hw=128x256
run fcn8s --weights "$W/fcn8s.pth" --batch-sizes 1,2
run fcn8s --weights "$W/fcn8s.pth" --batch-sizes 1 --option protocol=upstream
run nasfpn --weights "$W/nasfpn.pth" --batch-sizes 1,2 --option "results_json=$OUT/../nasfpn_dets.json"
