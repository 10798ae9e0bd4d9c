# A stand-in for the Dockerfiles' `python:3.11-slim-bookworm` FROM where no registry is reachable:
# Debian bookworm (made by debootstrap from the host's apt mirror, `docker import`ed by hack/images.py as
# BASE_IMAGE) with Debian's python3 + venv, and the host's extra CA certificates (networks that re-sign TLS make
# pip fail without them). hack/images.py builds it only when pulling the real base fails.
ARG BASE_IMAGE=local/debian:bookworm-minbase
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/python3 /usr/local/bin/python
COPY extra-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
