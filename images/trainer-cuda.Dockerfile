# syntax=docker/dockerfile:1.7
# The CUDA trainer image: training Jobs (fomaml, moe-steer, qa). One node runs
#   datasweep worker STAGE --spec /spec/worker.yaml
# and several nodes (Indexed Job + headless Service) run
#   torchrun --nnodes N --nproc-per-node G --node-rank $JOB_COMPLETION_INDEX --rdzv-endpoint ... \
#            -m datasweep.workloads.<stage_module> --spec /spec/worker.yaml
# torchrun starts `python -m ...` with its own interpreter, so datasweep is installed into the base image's
# Python (which already carries the CUDA torch build) rather than into a separate venv.
# Build from the repository root:
#   docker build -f images/trainer-cuda.Dockerfile -t datasweep-trainer-cuda:dev .
# The base image is pinned by tag; release builds pin its digest as well, e.g.
#   --build-arg TORCH_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime@sha256:<digest>
# No secret enters the build.
ARG TORCH_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

FROM ${TORCH_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
# --prefix collects datasweep and the dependencies the base lacks; torch is already installed, so pip keeps it.
RUN pip install --no-compile --prefix=/install ".[train]" \
 && python -c "import pathlib; assert not list(pathlib.Path('/install').rglob('torch/__init__.py')), \
    'the build pulled a second torch: pin torch to the base image version'" \
 && find /install -name __pycache__ -prune -exec rm -rf {} +

FROM ${TORCH_IMAGE}
LABEL org.opencontainers.image.title="datasweep-trainer-cuda" \
      org.opencontainers.image.description="datasweep CUDA trainer (torchrun)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 datasweep \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin datasweep
COPY --from=build /install /opt/conda
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HOME=/tmp/huggingface \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCHELASTIC_ERROR_FILE=/tmp/torchelastic_error.json
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["datasweep"]
CMD ["worker", "--help"]
