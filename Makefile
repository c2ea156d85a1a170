# Two commands do all set-up on a fresh machine (see README's Quickstart):
#   make demo   create .venv, install fedsynth, run the main job on embedded phantoms
#   make test   create .venv, install fedsynth, chromium (apt) and NiiVue (npm), run lint, types
#               and the tests
#   make browser  install Debian's chromium (apt) for the visual Turing test's browser tests
#   make viewer   install the visual Turing test's reading viewer, NiiVue, from npm (part of
#                 install and test)
#
# TORCH_SPEC picks the torch build installed before the project: the default is the CPU build
# (a bare `torch` may pull a multi-GB CUDA build). For a GPU machine, for example:
#   make demo TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo
VIEWER_DIR := evaluator/vtt/viewer
VIEWER := evaluator/vtt/static/vendor/niivue.umd.js

.PHONY: demo test lint install browser viewer clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) $(VIEWER)

# The browser tests drive Debian's chromium through Playwright's Python package (a dev
# dependency); Playwright's own browser download is not used.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
browser:
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq chromium; }

# The reading page's viewer, NiiVue, from npm (pinned, with its checksum, by the lock file): its
# self-contained browser bundle is copied into the package, so that the reading app serves it
# itself and no browser ever fetches anything from elsewhere. Node.js and npm come from apt if
# missing.
$(VIEWER): $(VIEWER_DIR)/package.json $(VIEWER_DIR)/package-lock.json
	command -v npm >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq npm; }
	npm ci --prefix $(VIEWER_DIR) --no-audit --no-fund --ignore-scripts --loglevel=error
	mkdir -p $(@D)
	cp $(VIEWER_DIR)/node_modules/@niivue/niivue/dist/niivue.umd.js $@

viewer: $(VIEWER)

demo: $(STAMP)
	FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 $(BIN)/fedsynth demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint browser $(VIEWER)
	FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 $(BIN)/pytest -n 2

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache $(VIEWER_DIR)/node_modules $(dir $(VIEWER))
