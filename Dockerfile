# calabi-connect-exporter: slim image, non-root (uid and gid 10001), with a health check.
# Build with Docker, or with podman/buildah given `--format docker` (the OCI format has no HEALTHCHECK).
# BASE_IMAGE: another Python 3.11 image with pip, useradd and groupadd (a mirror's copy, say).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# The container listens on every interface, so `serve` needs CALABI_INGEST_TOKENS (or
# CALABI_ALLOW_UNAUTHENTICATED=true, an explicit choice) to start.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    CALABI_LISTEN=0.0.0.0:9188 CALABI_DATA_DIR=/var/lib/calabi-exporter

WORKDIR /src
# Dependencies first, pinned and hashed (requirements/image.txt, kept in step with pyproject.toml by
# tests/unit/test_image.py), so two builds of one commit install the same files; then the package alone.
COPY requirements/image.txt ./requirements.txt
RUN pip install --no-compile --require-hashes -r requirements.txt
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install --no-compile --no-deps . && rm -rf /src \
    && groupadd --gid 10001 calabi \
    && useradd --uid 10001 --gid 10001 --no-log-init --home-dir /var/lib/calabi-exporter --create-home \
       --shell /usr/sbin/nologin calabi

USER 10001:10001
WORKDIR /var/lib/calabi-exporter
VOLUME ["/var/lib/calabi-exporter"]
EXPOSE 9188
# Asks /readyz at the address the configuration gives (CALABI_LISTEN, a config file, …).
HEALTHCHECK --interval=15s --timeout=5s --start-period=15s --retries=3 CMD ["calabi-exporter", "healthcheck"]
ENTRYPOINT ["calabi-exporter"]
CMD ["serve"]
