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
