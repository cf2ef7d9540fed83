#!/bin/sh
# zoo-install-lock LOCK (in every image, from runner/dockerfiles/base.Dockerfile): install a model's
# environment, exactly its hash lock (python3 runner/lock.py <model>): every package pinned with
# its sha256 (--require-hashes), wheels only (--only-binary: no compiler in the images), torch the
# +cpu wheel. `zoo-install-lock --no-deps WHEEL...` installs local wheels alone (the mmcv wheel);
# `zoo-install-lock --exec CMD...` runs CMD with the build inputs' pip environment below (the mmcv
# compile, runner/dockerfiles/mmcv-wheel-stage.sh).
#
# Where: the image's environment, the venv ZOO_VENV (default /opt/venv, made empty by the base),
# with the pip of the base's own interpreter (`pip --python`): the venv holds exactly the lock, and
# a model's Dockerfile installs it in a build stage and copies only the venv into its final stage.
#
# Build inputs (air-gapped and corporate builds): `invoke build --pip-config FILE --ca-bundle FILE
# --wheels DIR` puts them in runner/dockerfiles/build-inputs/ of the build context, which build
# stages copy to ZOO_BUILD_INPUTS (default /tmp/build-inputs); they reach pip as environment
# variables of this process only (never ENV), so no layer of a final image holds them:
#   pip.conf  PIP_CONFIG_FILE; it alone decides the indexes (no PyTorch CPU index is added: list
#             it there, or give the torch +cpu wheel in wheels/, or set no-index = true)
#   ca.pem    PIP_CERT (a TLS-re-signing network's CA bundle)
#   wheels/   PIP_FIND_LINKS (a folder of wheels: torch +cpu, or the whole lock for no network)
# Without pip.conf the PyTorch CPU index is the extra index, as before.
set -eu
usage() {
    echo "usage: zoo-install-lock LOCK | zoo-install-lock --no-deps WHEEL... | zoo-install-lock --exec CMD..." >&2
    exit 2
}
[ "$#" -ge 1 ] || usage
VENV="${ZOO_VENV:-/opt/venv}"
INPUTS="${ZOO_BUILD_INPUTS:-/tmp/build-inputs}"
# The base's interpreter: the first python3 on PATH outside the venv (the venv has no pip).
BASE_PY="$(PATH="$(printf '%s' "$PATH" | sed "s#$VENV/bin:##g")" command -v python3)" \
    || { echo "zoo-install-lock: no python3 outside $VENV on PATH" >&2; exit 1; }
INDEX="https://download.pytorch.org/whl/cpu"
if [ -f "$INPUTS/pip.conf" ]; then
    export PIP_CONFIG_FILE="$INPUTS/pip.conf"
    INDEX=""
fi
if [ -f "$INPUTS/ca.pem" ]; then
    export PIP_CERT="$INPUTS/ca.pem" REQUESTS_CA_BUNDLE="$INPUTS/ca.pem"
fi
if [ -d "$INPUTS/wheels" ]; then
    export PIP_FIND_LINKS="$INPUTS/wheels"
fi
venv_pip() {
    "$BASE_PY" -m pip --python "$VENV/bin/python" "$@"
}
if [ "$1" = "--exec" ]; then  # CMD... with the build inputs (and PIP_TORCH_INDEX: the torch index)
    shift
    [ "$#" -ge 1 ] || usage
    PIP_TORCH_INDEX="$INDEX" exec "$@"
fi
if [ "$1" = "--no-deps" ]; then
    shift
    [ "$#" -ge 1 ] || usage
    venv_pip install --no-cache-dir --no-deps "$@"
    exit 0
fi
[ "$#" -eq 1 ] || usage
venv_pip install --no-cache-dir --require-hashes --only-binary=:all: \
    ${INDEX:+--extra-index-url "$INDEX"} \
    -r "$1"
rm -f "$1"
