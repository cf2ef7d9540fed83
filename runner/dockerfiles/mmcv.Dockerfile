# The OpenMMLab models' shared base (fcn8s, nasfpn build FROM it: build arg ZOO_MMCV): the zoo
# base plus mmcv 2.1.0 with its compiled ops and the Debian libraries their packages need.
# runner/docker.py (`invoke build --model fcn8s`) builds it after zoo/base and tags it with a hash
# of its contents (zoo/mmcv:<hash>).
#
# Two stages. "build" puts the mmcv 2.1.0 wheel with its ops in /wheels (no wheel on PyPI for this
# torch/Python), from the python base alone (BASE_IMAGE: the pin of runner/dockerfiles/base.Dockerfile,
# passed by the runner), so that a change of the zoo base does not redo it:
# runner/dockerfiles/mmcv-wheel-stage.sh reuses the host's wheel when `invoke build` offers it
# (runner/mmcv_wheel.sh's work/cache/wheels/torch-<torch>/ of `invoke setup`, for the same torch;
# MMCV_WHEEL_SHA256 its sha256, checked), else compiles it with the same script as the local setup
# (runner/mmcv_wheel.sh; 20-35 minutes on 2 cores). The final stage gets only the wheel, so no
# compiler and no build input ends up in an image; it installs it with --no-deps (its dependencies
# are pinned in each model's hash lock, installed on top of it), as models/{fcn8s,nasfpn}/setup.sh
# do locally.
ARG BASE_IMAGE
ARG ZOO_BASE

# ----------------------------------------------------------------------------- mmcv wheel
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY runner/dockerfiles/install-lock.sh /usr/local/bin/zoo-install-lock
COPY runner/dockerfiles/mmcv-wheel-stage.sh /opt/zoo/runner/dockerfiles/mmcv-wheel-stage.sh
COPY runner/mmcv_wheel.sh /opt/zoo/runner/mmcv_wheel.sh
COPY runner/mmcv-build/ /opt/zoo/runner/mmcv-build/
COPY runner/dockerfiles/build-inputs/ /tmp/build-inputs/
ARG MMCV_WHEEL_SHA256=
RUN chmod 0755 /usr/local/bin/zoo-install-lock \
    && sh /opt/zoo/runner/dockerfiles/mmcv-wheel-stage.sh "$MMCV_WHEEL_SHA256"

# ----------------------------------------------------------------------------- the base
FROM ${ZOO_BASE}

# opencv-python (required by mmengine) needs libGL and glib; `patch` applies a model's
# patches/*.patch to the installed packages (nasfpn).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 patch \
    && rm -rf /var/lib/apt/lists/*

# The wheel alone, --no-deps, into the image's venv: `import mmcv.ops` needs torch, which each
# model's lock brings.
COPY --from=build /wheels/ /tmp/wheels/
RUN zoo-install-lock --no-deps /tmp/wheels/*/mmcv-2.1.0-*.whl \
    && rm -rf /tmp/wheels
# The host's wheel the build stage reused (its sha256; empty: compiled in the build stage).
ARG MMCV_WHEEL_SHA256=
LABEL io.zoo.mmcv-wheel-sha256="${MMCV_WHEEL_SHA256}"
