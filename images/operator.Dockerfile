# syntax=docker/dockerfile:1.7
# The operator image: `datasweep operator` (Kopf), slim and non-root. Build from the repository root:
#   docker build -f images/operator.Dockerfile -t datasweep-operator:dev .
# The base image is pinned by tag; release builds pin its digest as well, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:<digest of `docker buildx imagetools inspect`>
# No secret enters the build: the API keys reach Jobs at run time through secretKeyRef.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/datasweep
WORKDIR /src
# The operator needs no torch: the base install only (kopf, kubernetes, pydantic, click, openai).
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
LABEL org.opencontainers.image.title="datasweep-operator" \
      org.opencontainers.image.description="Kubernetes operator for ML experiment sweeps" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 datasweep \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin datasweep
COPY --from=build /opt/datasweep /opt/datasweep
# HOME=/tmp: the root filesystem is read-only in the chart; /tmp is an emptyDir.
ENV PATH=/opt/datasweep/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    DATASWEEP_CONFIG=/etc/datasweep/config.yaml
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["datasweep"]
CMD ["operator", "--liveness", "http://0.0.0.0:8080/healthz", "--all-namespaces"]
