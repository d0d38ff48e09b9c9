# syntax=docker/dockerfile:1
# One image, two programs:
#   datamigration-operator  the default command (the chart runs it with --liveness=...)
#   datamigration-runner    phase Jobs run it (`command: [datamigration-runner]`, core/jobs.py)
# Build:  docker build -t ghcr.io/datamigration-operator/datamigration-operator:0.1.0 .
#
# The runtime is distroless Python 3.11 (Debian 12): no shell, no package manager, user 65532.
# The build stage is Debian 12 too, so the virtualenv it makes points at the same interpreter
# (/usr/bin/python3.11) and links against the same glibc. Pin both images by digest in CI.
ARG BUILD_IMAGE=debian:12-slim
ARG RUNTIME_IMAGE=gcr.io/distroless/python3-debian12:nonroot

# -- build: wheels of the project and of every dependency, then a virtualenv made only of them --
FROM ${BUILD_IMAGE} AS build
RUN apt-get update \
 && apt-get install --yes --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN /usr/bin/python3.11 -m venv /opt/build && /opt/build/bin/pip install --upgrade pip
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/build/bin/pip wheel --wheel-dir /wheels . \
 && /usr/bin/python3.11 -m venv --without-pip /opt/datamigration \
 && /opt/build/bin/pip --python /opt/datamigration/bin/python install \
      --no-index --find-links /wheels datamigration-operator \
 && /opt/datamigration/bin/python -c "import datamigration.controller.main, datamigration.runner.main"

# -- runtime ------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="datamigration-operator" \
      org.opencontainers.image.description="Expand, backfill, code-rollout, contract: one database change at a time" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/datamigration /opt/datamigration
# Bytecode was compiled at install time; the root file system is read-only in the chart.
ENV PATH=/opt/datamigration/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The distroless "nonroot" user, numeric so that Kubernetes can check runAsNonRoot.
USER 65532:65532
WORKDIR /
# The base image's entrypoint is python itself: clear it, so that `command` (Kubernetes) or the
# arguments of `docker run` name the program, e.g. `docker run IMAGE datamigration-runner --help`.
ENTRYPOINT []
CMD ["datamigration-operator"]
