# hybridroute developer entry points. `make test` and `make demo` work on a fresh machine:
# they create .venv, install the package, build the Go test infrastructure once (cached under
# ~/.cache/hybridroute) and install Debian's prometheus when it is missing.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install deps toolchain test test-unit lint format crds demo demo-down bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (hybridroute needs Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

deps:
	bash e2e/install-system-deps.sh

toolchain: install
	$(BIN)/python e2e/toolchain.py kubernetes etcd helm

test: install deps toolchain
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest -q -m "not cluster and not prometheus" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

crds: install
	$(BIN)/python -m hybridroute_operator.crdgen

demo: install deps toolchain
	$(BIN)/python e2e/demo.py up --dir .demo

demo-down: install
	$(BIN)/python e2e/demo.py down --dir .demo

bench: install
	$(BIN)/python bench/router_overhead.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
