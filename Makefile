# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test check lint typecheck bench conformance fmt clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# `make run PORT=8081`: the gateway's port; the quickstart's docs MCP server follows it (PORT + 921, 9001 by
# default), so two checkouts can run side by side.
PORT ?= 8080
DOCS_PORT ?= $(shell expr $(PORT) + 921)

run: $(STAMP)
	PORT=$(PORT) DOCS_PORT=$(DOCS_PORT) $(BIN)/agentgw serve --config examples/quickstart/agentgw.yaml

test: $(STAMP)
	$(BIN)/pytest

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check agentgw tests bench
	$(BIN)/ruff format --check agentgw tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format agentgw tests bench
	$(BIN)/ruff check --fix agentgw tests bench

bench: $(STAMP)
	$(BIN)/python bench/llm.py
	$(BIN)/python bench/policy.py
	$(BIN)/python bench/stages.py
	$(BIN)/python bench/mcp_bench.py
	$(BIN)/python bench/a2a_bench.py
	$(BIN)/python bench/audit_bench.py

conformance: $(STAMP)
	bash conformance/run.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
