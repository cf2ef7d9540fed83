#!/bin/sh
# zoo-install-lock LOCK (in every image, from runner/dockerfiles/base.Dockerfile): install a model's
# environment, exactly its hash lock (python3 runner/lock.py <model>): every package pinned with
# its sha256 (--require-hashes), wheels only (--only-binary: no compiler in the images), torch the
# +cpu wheel of the PyTorch CPU index. The lock file is removed afterwards.
set -eu
if [ "$#" -ne 1 ]; then
    echo "usage: zoo-install-lock LOCK" >&2
    exit 2
fi
pip install --no-cache-dir --require-hashes --only-binary=:all: \
    --extra-index-url https://download.pytorch.org/whl/cpu \
    -r "$1"
rm -f "$1"
