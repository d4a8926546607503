# syntax=docker/dockerfile:1
# group-enriched-consumer. The builder makes wheels of the package and its dependencies and installs
# only those wheels into /opt/venv (then drops pip); the final stage is the base plus that venv.
#   scripts/image/build.sh      (buildah, on a base made from Debian packages by make-base.sh)
#   docker build -t group-enriched-consumer .      (any Python 3.11+ image with `python3 -m venv`)
# Runs as uid 10001 on a read-only root filesystem: nothing is written at run time.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
# The context is only pyproject.toml, README.md, consumer/ and schemas/ (see .dockerignore).
COPY . /src
# Binary wheels from PyPI; the pip cache is a build-time mount, never in a layer.
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/venv \
 && /opt/venv/bin/pip wheel --disable-pip-version-check --wheel-dir /wheels /src \
 && /opt/venv/bin/pip install --disable-pip-version-check --no-index --find-links=/wheels group-enriched-consumer \
 && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="group-enriched-consumer" \
      org.opencontainers.image.description="Kafka consumer: Avro company enrichments to group_enriched Track API events"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
# COPY, not RUN --mount=from=builder: buildah reuses a cached RUN layer even when the stage it mounts changed.
COPY --from=builder /opt/venv /opt/venv
# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
EXPOSE 9400
# Exec form: SIGTERM goes to the consumer itself, which drains, commits and exits 0.
ENTRYPOINT ["group-enriched-consumer"]
