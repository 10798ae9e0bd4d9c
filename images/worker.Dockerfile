# syntax=docker/dockerfile:1.7
# The generate worker image: data generation Jobs run `datasweep worker generate --spec /spec/worker.yaml`.
# Small on purpose: the base install only (openai SDK, no torch). The training stages run in trainer.Dockerfile.
# Build from the repository root (or `make images`, which also works without a registry):
#   docker build -f images/worker.Dockerfile -t datasweep-worker:dev .
# The base image is pinned by tag; release builds pin its digest as well, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:<digest of `docker buildx imagetools inspect`>
# No secret enters the build: API keys reach the Job at run time through secretKeyRef.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/datasweep
WORKDIR /src
# Dependencies first, from pyproject.toml alone (an empty package stands in for the code), so that a code
# change rebuilds only the last layer.
COPY pyproject.toml ./
RUN mkdir -p operator/datasweep && touch README.md operator/datasweep/__init__.py \
 && /opt/datasweep/bin/pip install --no-compile . && /opt/datasweep/bin/pip uninstall -y datasweep
COPY README.md ./
COPY operator/ operator/
# The stand-in package's setuptools build dir goes first: files there newer than the copied sources would win.
RUN rm -rf build operator/datasweep.egg-info \
 && /opt/datasweep/bin/pip install --no-compile --no-deps . \
 && find /opt/datasweep -name __pycache__ -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="datasweep-worker" \
      org.opencontainers.image.description="datasweep generate worker (OpenAI-compatible APIs, no torch)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 datasweep \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin datasweep
COPY --from=build /opt/datasweep /opt/datasweep
ENV PATH=/opt/datasweep/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["datasweep"]
# The operator's Jobs give the full command (worker generate --spec FILE); alone, the image lists the stages.
CMD ["worker", "--help"]
