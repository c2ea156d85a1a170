# Two commands do all set-up on a fresh machine (see README's Quickstart):
#   make demo   create .venv, install fedsynth, run the main job on embedded phantoms
#   make test   create .venv, install fedsynth and chromium (apt), run lint, types and the tests
#   make browser  install Debian's chromium (apt) for the visual Turing test's browser tests
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

.PHONY: demo test lint install browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The browser tests drive Debian's chromium through Playwright's Python package (a dev
# dependency); Playwright's own browser download is not used.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
browser:
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq chromium; }

demo: $(STAMP)
	FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 $(BIN)/fedsynth demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint browser
	FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 $(BIN)/pytest -n 2

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
