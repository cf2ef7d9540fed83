# The zoo's shared base image: what every model's image has in common below its own environment.
# Each models/<name>/Dockerfile builds FROM it (build arg ZOO_BASE), installs the model's
# environment, and runner/dockerfiles/core.Dockerfile then adds the zoo core and the model on top.
# runner/docker.py (`invoke build --model M`) builds it first and tags it with a hash of its
# contents (zoo/base:<hash>), so a model is never built on a stale base.
#
# No Debian packages are installed: every native library the wheels need beyond what the base
# image has (glibc, libstdc++, libgcc_s, zlib) is bundled in the wheels (torch ships its own
# libgomp; opencv-python-headless needs no GL/X libraries; the Pillow wheel bundles
# libpng/zlib/libjpeg). Models that need more install it in their own Dockerfile (or in
# runner/dockerfiles/mmcv.Dockerfile for the OpenMMLab ones).
#
# The base image, pinned by digest (a tag can be moved; a digest cannot): python 3.11.10 on
# Debian bookworm, slim, the multi-architecture index digest as Renovate pinned it in the public
# repository nalabelle/build (images/digests.Dockerfile, `python:3.11.10-slim-bookworm@sha256:5148c0e4...`;
# 3.11.10 was then what the python:3.11-slim-bookworm tag pointed to). This is the one place the
# pin is written (runner/docker.py passes it on to runner/dockerfiles/mmcv.Dockerfile). Another base:
# `invoke build --base-image ...` (runner.docker.plan_build/build(base_image=...)).
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# `zoo-install-lock LOCK`: a model's environment, exactly its hash lock (the one pip command of
# every image: --require-hashes, wheels only, torch from the PyTorch CPU index).
COPY runner/dockerfiles/install-lock.sh /usr/local/bin/zoo-install-lock

# Non-root user (USER is set by runner/dockerfiles/core.Dockerfile, after the model's installs); /cache and
# /results exist (owned by zoo) for a run without mounts. /cache is also world-writable (sticky,
# as /tmp): a locked-down run mounts a tmpfs there, and the engine (dockerd 20.10 here) gives that
# tmpfs the mode of the image's folder, owned by root, whatever its mode= option says; with 0755
# neither uid 1000 nor a caller's uid could write its cache.
RUN chmod 0755 /usr/local/bin/zoo-install-lock \
    && python3 -m venv --without-pip /opt/venv \
    && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin zoo \
    && mkdir -p /cache /results \
    && chown zoo:zoo /cache /results \
    && chmod 1777 /cache

# The image's environment: a venv, empty here (no pip: it holds exactly a model's lock). Each
# model's Dockerfile installs its lock into it in a build stage (zoo-install-lock, with the build
# inputs of `invoke build --pip-config/--ca-bundle/--wheels`) and copies only /opt/venv into its
# final stage, so that no layer of an image holds those inputs.
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/zoo

# Every image runs the same entrypoint as the local run; each model's Dockerfile sets its CMD
# (set here, before the models' CMD: an ENTRYPOINT set later would reset an inherited CMD).
ENTRYPOINT ["python", "-m", "zoo"]
