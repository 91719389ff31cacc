# syntax=docker/dockerfile:1
# The gateway's image: `make docker` builds and tags it <version> and <version>-<git sha>.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY setup.cfg setup.py pyproject.toml README.md ./
COPY provider_gateway ./provider_gateway
# The package and every dependency as wheels: the runtime stage installs them without build tools.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="provider-gateway" \
      org.opencontainers.image.description="Moves files from data providers (HTTP, FTP, SFTP, GridFTP) into S3 for Step Functions workflows" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# GridFTP providers are read through the Grid Community Toolkit's globus-url-copy (Debian bookworm's).
RUN apt-get update \
    && apt-get install -y --no-install-recommends globus-gass-copy-progs=10.12-2 \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/provider_gateway-*.whl \
    && useradd --create-home --uid 10001 gateway
USER 10001
EXPOSE 9108
# /healthz fails when a connection or poller thread has died or Step Functions has been unreachable too long.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["provider-gateway", "status", "--check", "--url", "http://127.0.0.1:9108"]
# Exec form: SIGTERM from ECS reaches the gateway, which then stops gracefully.
ENTRYPOINT ["provider-gateway"]
CMD ["run", "--config", "/config/collections.yml", "--metrics-port", "9108", "--metrics-host", "0.0.0.0"]
