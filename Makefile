# datasweep: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
CACHE ?= $(HOME)/.cache/datasweep
VENV ?= $(CACHE)/venv
PY := $(VENV)/bin/python
export PATH := $(VENV)/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv controlplane test lint unit e2e demo cluster-up cluster-down crds bench clean-cache

venv:
	@hack/ensure-venv.sh "$(VENV)"

controlplane: venv
	@$(PY) hack/controlplane.py build

lint: venv
	$(VENV)/bin/ruff check operator tests hack bench
	$(VENV)/bin/ruff format --check operator tests hack bench
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest tests/unit -q

e2e: controlplane
	$(PY) -m pytest tests/e2e -q

## The test command: installs what is missing, builds (or reuses) the control plane, lints, runs every test.
test: venv controlplane lint
	$(PY) -m pytest tests -q -p no:cacheprovider

## The demo: the embedded control plane with kwok GPU nodes, the operator, the seed 000 experiments.
demo: controlplane
	$(PY) hack/demo.py

cluster-up: controlplane
	@$(PY) hack/controlplane.py up

cluster-down: venv
	@$(PY) hack/controlplane.py down

crds: venv
	$(PY) -m datasweep.api.crdgen --out crds --chart charts/datasweep/crds

bench: venv
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
