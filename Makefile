# datasweep: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
CACHE ?= $(HOME)/.cache/datasweep
VENV ?= $(CACHE)/venv
PY := $(VENV)/bin/python
export PATH := $(VENV)/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv node-deps controlplane images test lint unit e2e e2e-real demo cluster-up cluster-down install crds bench clean-cache

venv:
	@hack/ensure-venv.sh "$(VENV)"

## Debian packages for the real test node and the images (runc, containerd, docker.io, ...): root + apt only,
## a no-op when installed; elsewhere one line, and the test cluster runs kwok nodes only.
node-deps:
	@hack/ensure-node-deps.sh

controlplane: venv node-deps
	@$(PY) hack/controlplane.py build

## The images: operator and worker; WITH_TRAINER=1 adds the trainer (torch + CUDA libraries, ~6 GB, ~10 min).
## Cached: an image whose content hash is current is not rebuilt. Without Docker (or root) it says so and skips.
images: node-deps
	@$(PY) hack/images.py build --if-possible operator worker $(if $(WITH_TRAINER),trainer)

lint: venv
	$(VENV)/bin/ruff check operator tests hack bench
	$(VENV)/bin/ruff format --check operator tests hack bench
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest tests/unit -q

e2e: controlplane images
	$(PY) -m pytest tests/e2e -q -m "not trainer"

## The training stages in real containers from the trainer image (not in `make test`: see README, CI budget).
e2e-real: controlplane
	@$(PY) hack/images.py build --if-possible operator worker trainer
	$(PY) -m pytest tests/e2e/test_real_node.py -q

## The test command: installs what is missing, builds (or reuses) the control plane and the operator and worker
## images, lints, runs every test but the trainer-image ones (`make e2e-real`).
test: venv controlplane images lint
	$(PY) -m pytest tests -q -p no:cacheprovider -m "not trainer"

## The demo: the embedded control plane with kwok GPU nodes, the operator, the seed 000 experiments.
demo: controlplane images
	$(PY) hack/demo.py

cluster-up: controlplane
	@$(PY) hack/controlplane.py up

cluster-down: venv
	@$(PY) hack/controlplane.py down

## The chart on the `make cluster-up` cluster as a user installs it (docs/deploy.md): images on the real node, a
## hostPath volume for the data claim, `helm upgrade --install`, the operator Running from its image.
install: venv node-deps
	@$(PY) hack/install.py $(if $(NAMESPACE),--namespace $(NAMESPACE))

crds: venv
	$(PY) -m datasweep.api.crdgen --out crds --chart charts/datasweep/crds

bench: venv
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
