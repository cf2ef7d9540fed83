# The zoo's shared top layers: the core and the model's own files on top of the model's image
# (models/<name>/Dockerfile, built FROM runner/dockerfiles/base.Dockerfile: its environment and CMD).
# runner/docker.py (`invoke build --model M`) builds it last, as zoo/<model>:latest, with
#   MODEL_IMAGE  the model's image (zoo/<model>-env:<hash of its contents>)
#   MODEL        the model's name (its folder under models/)
#   GIT_COMMIT   the checked-out commit (empty when unknown: the record's git_commit is then null)
# These are the last layers of every image, so that a change of zoo/ (or of a model's code)
# rebuilds only them: the model's environment below is not invalidated.
ARG MODEL_IMAGE

FROM ${MODEL_IMAGE}

# The core and the model (with its built-in checkpoint and data, where it has them).
ARG MODEL
COPY zoo/ /opt/zoo/zoo/
COPY schema/ /opt/zoo/schema/
COPY models/__init__.py /opt/zoo/models/__init__.py
COPY models/${MODEL}/ /opt/zoo/models/${MODEL}/

# Late, so that a new commit does not invalidate the layers above.
ARG GIT_COMMIT=
LABEL org.opencontainers.image.title="zoo-${MODEL}" \
      org.opencontainers.image.description="Offline inference of the zoo model ${MODEL} (CPU)" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      io.zoo.model="${MODEL}"

# The build inputs the environment was installed with (`invoke build --pip-config/--ca-bundle/
# --wheels`): names, sha256 and sizes only, so that a check can look for them in the image
# (tests/runner/test_docker_build_options.py); empty without inputs.
ARG BUILD_INPUTS=
LABEL io.zoo.build-inputs="${BUILD_INPUTS}"

ENV PYTHONPATH=/opt/zoo \
    ZOO_IN_CONTAINER=1 \
    ZOO_CACHE=/cache \
    ZOO_GIT_COMMIT=${GIT_COMMIT}

# zoo, numerically (resolvable without /etc/passwd, e.g. for runAsNonRoot checks).
USER 1000:1000
