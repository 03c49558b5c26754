# One image for every command: `srm serve` (default), `srm reaper` (the sidecar) and
# `srm events`. Dependencies come from uv.lock, exactly as the tests ran them.
# Build stage: a virtual environment with SRM and its locked dependencies, so the runtime
# image has no build tools.
ARG BASE=python:3.11-slim
FROM ${BASE} AS build
ARG UV_VERSION=0.13.9
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock README.md LICENSE ./
COPY srm ./srm
# --no-dev: no test tools; --no-editable: SRM itself is installed, not linked to /src
ENV UV_PROJECT_ENVIRONMENT=/opt/srm UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy
RUN /opt/uv/bin/uv sync --locked --no-dev --no-editable --no-cache

FROM ${BASE}
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
EXPOSE 8080 9101
STOPSIGNAL SIGTERM
CMD ["srm", "serve"]
