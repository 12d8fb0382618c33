# hybridroute developer entry points. `make test` and `make demo` work on a fresh machine:
# they create .venv, install the package, build the Go test infrastructure once (cached under
# ~/.cache/hybridroute) and install Debian's prometheus when it is missing.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_STAMP := $(VENV)/.demo-installed-stamp
DEMO_VIEW_STAMP := $(VENV)/.demo-view-installed-stamp

.PHONY: install deps toolchain images test test-unit lint format crds demo demo-host-processes demo-view demo-down bench privacy-soak clean

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

test: install demo-view deps toolchain images
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

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

# The demo extra builds llama-cpp-python into the venv, which compiles llama.cpp from source on first
# install (several minutes on two cores): only the host-process demo needs it, `make demo` runs the
# model as a pod from the llamacpp image (its wheel is built once and cached under ~/.cache/hybridroute).
# pip runs verbose into a log and the compile steps are echoed as "[N/M] file" lines so the wait shows
# progress. bash for pipefail: a failed pip must fail make.
$(DEMO_STAMP): pyproject.toml $(STAMP)
	@echo "[demo] installing the demo extra (.[dev,demo]): llama-cpp-python compiles llama.cpp from source"
	@echo "[demo] on first install, several minutes on 2 cores; full log: $(VENV)/demo-install.log"
	bash -o pipefail -c "CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install -v -e '.[dev,demo]' 2>&1 \
	  | tee $(VENV)/demo-install.log \
	  | sed -nuE 's@^ *(\[[0-9]+/[0-9]+\]) .* -c [^ ]*/(vendor/[^ ]+)\$$@[demo] compiling llama.cpp \1 \2@p; /^(Collecting|Building wheel|Successfully|ERROR)/p'"
	touch $(DEMO_STAMP)

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

# The older shape: operator, llama.cpp and router as host processes on an API-only control plane.
demo-host-processes: $(DEMO_STAMP) deps toolchain
	$(BIN)/python e2e/demo.py up --dir .demo --host-processes $(DEMO_ARGS)

demo-down: install
	$(BIN)/python e2e/demo.py down --dir .demo

bench: install
	$(BIN)/python bench/router_overhead.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
