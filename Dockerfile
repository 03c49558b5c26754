# One image for both commands: `srm serve` (default) and `srm reaper` (the sidecar).
# Build stage: wheels for SRM and its dependencies, so the runtime image has no build tools.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY srm ./srm
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SRM_HOST=0.0.0.0 \
    SRM_PORT=8080
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent srm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-compile /wheels/*.whl && rm -rf /wheels
# an unprivileged user that owns nothing in the image: all state lives in Redis
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 9101
STOPSIGNAL SIGTERM
CMD ["srm", "serve"]
