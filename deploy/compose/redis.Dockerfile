# Redis for scripts/compose-check, which cannot pull redis:7.4-alpine: Debian's redis-server
# (7.0) on the same Debian base image as SRM's. Operators use the compose file's image.
ARG BASE
FROM ${BASE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data
WORKDIR /data
CMD ["redis-server"]
