# Two commands for a newcomer: `make demo` and `make test`. Both install into .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench serve

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/crossdock demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy domain connectors tools agents crews knowledge runtime api twin crossdock

# Needs no servers: embedded Redis and PostgreSQL, unless REDIS_URL / DATABASE_URL point at running ones.
test: $(STAMP) lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/crossdock bench intake

serve: $(STAMP)
	$(BIN)/crossdock serve
