# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
WORKDIR /src
COPY setup.cfg setup.py pyproject.toml README.md ./
COPY provider_gateway ./provider_gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="provider-gateway" \
      org.opencontainers.image.description="Moves files from data providers into S3 for Step Functions workflows"
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --create-home --uid 10001 gateway
USER gateway
# Exec form: SIGTERM from ECS reaches the gateway, which then stops gracefully.
ENTRYPOINT ["provider-gateway"]
CMD ["run", "--config", "/config/collections.yml"]
