# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run agents-demo test check lint typecheck bench conformance conformance-mcp conformance-a2a fmt clean browser screenshots haproxy cluster cluster-test drills soak

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# `make run PORT=8081`: the gateway's port; the quickstart's docs MCP server and demo agents follow it (docs
# PORT + 921, planner + 922, researcher + 923: 9001-9003 by default), so two checkouts can run side by side.
PORT ?= 8080
DOCS_PORT ?= $(shell expr $(PORT) + 921)
PLANNER_PORT ?= $(shell expr $(PORT) + 922)
RESEARCHER_PORT ?= $(shell expr $(PORT) + 923)

run: $(STAMP)
	PORT=$(PORT) DOCS_PORT=$(DOCS_PORT) PLANNER_PORT=$(PLANNER_PORT) RESEARCHER_PORT=$(RESEARCHER_PORT) \
		$(BIN)/agentgw serve --config examples/quickstart/agentgw.yaml

# With `make run` going (same PORT): ask the planner, which delegates to the researcher; print the task's trace.
QUESTION ?= How do budgets work?
agents-demo: $(STAMP)
	$(BIN)/python examples/agents/run.py --gateway http://127.0.0.1:$(PORT) \
		--config examples/quickstart/agentgw.yaml "$(QUESTION)"

# One pytest worker per core (pytest-xdist): every test brings its own servers on free loopback ports, its own
# Redis key prefix and PostgreSQL schema, so they run side by side.
test: $(STAMP)
	$(BIN)/pytest -n auto $(PYTEST_ARGS)

# Debian's chromium for the console's browser tests and screenshots (Playwright drives it; no browser download).
browser:
	command -v chromium >/dev/null || (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
		|| (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null))

# The console's pages as PNGs (docs/console/) from a seeded quickstart: docs/console.md and the README show them.
screenshots: $(STAMP) browser
	$(BIN)/python scripts/screenshots.py

check: lint typecheck

lint: $(STAMP)
	$(BIN)/ruff check agentgw tests bench examples scripts
	$(BIN)/ruff format --check agentgw tests bench examples scripts

typecheck: $(STAMP)
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format agentgw tests bench examples scripts
	$(BIN)/ruff check --fix agentgw tests bench examples scripts

bench: $(STAMP)
	$(BIN)/python bench/footprint.py
	$(BIN)/python bench/llm.py
	$(BIN)/python bench/policy.py
	$(BIN)/python bench/stages.py
	$(BIN)/python bench/mcp_bench.py
	$(BIN)/python bench/a2a_bench.py
	$(BIN)/python bench/audit_bench.py
	$(BIN)/python bench/guardrails.py --gateway
	$(BIN)/python bench/routing.py
	$(BIN)/python bench/cache.py

# N gateway replicas (REPLICAS, default 3) behind Debian's HAProxy on this machine's Redis and PostgreSQL, with the
# quickstart's upstreams (docs/deployment.md): `make cluster` until Ctrl-C; `make cluster-test` runs tests/cluster.
REPLICAS ?= 3
haproxy:
	command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy)

cluster: $(STAMP) haproxy
	$(BIN)/python scripts/cluster.py up --replicas $(REPLICAS)

cluster-test: $(STAMP) haproxy
	$(BIN)/python scripts/cluster.py test --replicas $(REPLICAS)

# Failure drills (tests/drills, minutes, never in `make test`): each brings up its own small cluster and kills a
# replica mid-stream, restarts a private Redis, fails a private PostgreSQL over, or rolls a restart under load.
drills: $(STAMP) haproxy
	AGENTGW_DRILLS=1 $(BIN)/pytest -v tests/drills $(PYTEST_ARGS)

# SOAK_MINUTES (default 30) of mixed LLM/MCP/A2A traffic through 3 replicas, with a growth verdict (docs/operations.md).
SOAK_MINUTES ?= 30
soak: $(STAMP) haproxy
	$(BIN)/python scripts/soak.py --minutes $(SOAK_MINUTES)

# Both official suites, each against its fixture alone and through agentgw (docs/conformance.md).
conformance: conformance-mcp conformance-a2a

conformance-mcp: $(STAMP)
	bash conformance/run.sh

conformance-a2a: $(STAMP)
	bash conformance/a2a.sh

clean:
	rm -rf $(VENV) .venv-tck .mypy_cache .ruff_cache .pytest_cache
