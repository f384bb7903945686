# Two commands on a fresh machine: `make run` (default experiment) and `make test` (the test suite).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup run test test-torch test-fast lint bench clean deploy-demo flwr-sim docs

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "fedflower needs Python >= 3.11 (flwr 1.42, Keras 3.15); '$(PYTHON)' is $$($(PYTHON) -V 2>&1 || echo missing): run make PYTHON=python3.11 (or newer)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "installing fedflower and its dependencies into $(VENV) (a few minutes the first time)"
	$(BIN)/python -m pip install --quiet --quiet -e '.[sim,test,dev,docs]'  # errors only: no setuptools notices
	touch $(STAMP)

setup: $(STAMP)

run: setup  ## the default experiment: 10 hospitals x 1000 patients, FedAvg, 10 rounds
	$(BIN)/fedflower $(ARGS)

test: setup  ## lint, type check, the docs build + the whole test suite (slow tests included), then the backend subset on JAX
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mkdocs build --strict --quiet --site-dir build/site
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q -m "backend and not slow" $(PYTEST_ARGS)

test-torch: setup  ## the backend-marked subset on PyTorch (needs torch: see docs/how-to/backends.md)
	@$(BIN)/python -c 'import torch' 2>/dev/null || { \
	  echo "make test-torch needs PyTorch in $(VENV): $(BIN)/python -m pip install torch (a CPU build: see docs/how-to/backends.md)" >&2; exit 2; }
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q -m "backend and not slow" $(PYTEST_ARGS)

test-fast: setup  ## the suite without tests marked slow
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

docs: setup  ## the documentation site into site/ (generated reference and benchmark pages)
	$(BIN)/mkdocs build --strict

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup  ## every benchmark under bench/
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/async_vs_sync.py

NODES ?= 3
ROUNDS ?= 3
BACKENDS ?=  # Keras backends cycled over the SuperNodes, e.g. tensorflow,jax,torch (empty: tensorflow)
deploy-demo: setup  ## SuperLink + NODES SuperNodes on 127.0.0.1 (TLS, node auth), the experiment via flwr run (BACKENDS=tensorflow,jax,torch: one per node)
	$(BIN)/fedflower-deploy demo --nodes $(NODES) $(if $(BACKENDS),--backends $(BACKENDS)) num_rounds=$(ROUNDS) $(ARGS)

flwr-sim: setup  ## `flwr run .` in Flower's local simulation (NODES virtual SuperNodes), cleaned up after
	$(BIN)/fedflower-deploy simulate --nodes $(NODES) num_rounds=$(ROUNDS) $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun build dist site *.egg-info
