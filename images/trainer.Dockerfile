# syntax=docker/dockerfile:1.7
# The trainer image: the training stages (fomaml, moe-steer, qa) on CPU or GPU. PyPI's torch wheels carry the
# CUDA runtime, so the same image serves GPU nodes (the driver comes from the node). One node runs
#   datasweep worker STAGE --spec /spec/worker.yaml
# and several GPUs or nodes (Indexed Job + headless Service) run
#   torchrun --nnodes N --nproc-per-node G --node-rank $JOB_COMPLETION_INDEX ... -m datasweep.workloads.<stage>
# torchrun is the venv's, so `python -m` runs the venv's interpreter. Build from the repository root:
#   docker build -f images/trainer.Dockerfile -t datasweep-trainer:dev .
# Large (~6 GB, mostly CUDA libraries): `make images` builds it only with WITH_TRAINER=1 (see README).
# No secret enters the build.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/datasweep
WORKDIR /src
# Dependencies first (torch is the slow part), from pyproject.toml alone: a code change rebuilds only the
# last layer.
COPY pyproject.toml ./
RUN mkdir -p operator/datasweep && touch README.md operator/datasweep/__init__.py \
 && /opt/datasweep/bin/pip install --no-compile ".[train,tensorboard]" && /opt/datasweep/bin/pip uninstall -y datasweep
COPY README.md ./
COPY operator/ operator/
# The stand-in package's setuptools build dir goes first: files there newer than the copied sources would win.
RUN rm -rf build operator/datasweep.egg-info \
 && /opt/datasweep/bin/pip install --no-compile --no-deps . \
 && find /opt/datasweep -name __pycache__ -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="datasweep-trainer" \
      org.opencontainers.image.description="datasweep trainer (torch + transformers; CPU and CUDA)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 datasweep \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin datasweep
COPY --from=build /opt/datasweep /opt/datasweep
ENV PATH=/opt/datasweep/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HOME=/tmp/huggingface \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCHELASTIC_ERROR_FILE=/tmp/torchelastic_error.json
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["datasweep"]
CMD ["worker", "--help"]
