# The base image of scripts/compose-check: Debian bookworm from debootstrap (python3 and its
# venv module) plus the CA certificates of the build host, so that pip and uv inside
# `podman build` reach the package index through whatever TLS proxy the host trusts.
ARG DEBIAN
FROM ${DEBIAN}
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt
