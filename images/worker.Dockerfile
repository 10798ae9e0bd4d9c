# syntax=docker/dockerfile:1.7
# The CPU worker image: data generation Jobs run `datasweep worker generate --spec /spec/worker.yaml`
# (the training stages also run here on CPU for small models). Build from the repository root:
#   docker build -f images/worker.Dockerfile -t datasweep-worker:dev .
# The base image is pinned by tag; release builds pin its digest as well, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:<digest of `docker buildx imagetools inspect`>
# No secret enters the build: API keys reach the Job at run time through secretKeyRef.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
# CPU-only torch wheels (the CUDA ones are in trainer-cuda.Dockerfile).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/datasweep
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/datasweep/bin/pip install --no-compile --extra-index-url "${TORCH_INDEX_URL}" ".[train]" \
 && find /opt/datasweep -name __pycache__ -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="datasweep-worker" \
      org.opencontainers.image.description="datasweep CPU worker (generation and small training stages)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 datasweep \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin datasweep
COPY --from=build /opt/datasweep /opt/datasweep
ENV PATH=/opt/datasweep/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HOME=/tmp/huggingface \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["datasweep"]
# The operator's Jobs give the full command (worker STAGE --spec FILE); alone, the image lists the stages.
CMD ["worker", "--help"]
