# The OpenMMLab models' shared base (fcn8s, nasfpn build FROM it: build arg ZOO_MMCV): the zoo
# base plus mmcv 2.1.0 with its compiled ops and the Debian libraries their packages need.
# runner/docker.py (`invoke build --model fcn8s`) builds it after zoo/base and tags it with a hash
# of its contents (zoo/mmcv:<hash>).
#
# Two stages. "build" compiles mmcv 2.1.0 with its ops (no wheel on PyPI for this torch/Python;
# about 15 minutes on 2 cores) with the same script as the local setup (runner/mmcv_wheel.sh),
# from the python base alone (BASE_IMAGE: the pin of runner/dockerfiles/base.Dockerfile, passed by the runner),
# so that a change of the zoo base does not recompile it. The final stage gets only the wheel, so
# no compiler ends up in an image; it installs it with --no-deps (its dependencies are pinned in
# each model's hash lock, installed on top of it), as models/{fcn8s,nasfpn}/setup.sh do locally.
ARG BASE_IMAGE
ARG ZOO_BASE

# ----------------------------------------------------------------------------- mmcv wheel
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential util-linux \
    && rm -rf /var/lib/apt/lists/*
COPY runner/mmcv_wheel.sh /opt/zoo/runner/mmcv_wheel.sh
COPY runner/mmcv-build/ /opt/zoo/runner/mmcv-build/
# torch for the build: the CPU build the final image installs (2.13.0+cpu), from the build's hash
# lock; the script builds in its own venv from the same locks and checks the sdist's pinned sha256.
RUN python -m venv /opt/torchenv \
    && /opt/torchenv/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: \
        --extra-index-url https://download.pytorch.org/whl/cpu -r /opt/zoo/runner/mmcv-build/requirements.lock \
    && MMCV_BUILD_ONLY=1 PIP_TORCH_INDEX=https://download.pytorch.org/whl/cpu PIP_NO_CACHE_DIR=1 \
       bash /opt/zoo/runner/mmcv_wheel.sh /opt/torchenv/bin/python /wheels

# ----------------------------------------------------------------------------- the base
FROM ${ZOO_BASE}

# opencv-python (required by mmengine) needs libGL and glib; `patch` applies a model's
# patches/*.patch to the installed packages (nasfpn).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 patch \
    && rm -rf /var/lib/apt/lists/*

# The wheel alone, --no-deps: `import mmcv.ops` needs torch, which each model's lock brings.
COPY --from=build /wheels/ /tmp/wheels/
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*/mmcv-2.1.0-*.whl \
    && rm -rf /tmp/wheels
