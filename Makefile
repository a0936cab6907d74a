# Two commands for a newcomer: `make demo` and `make test`. Both install into .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install lock demo test test-llm lint bench serve

# requirements.lock pins every package of the dev install (the service, every extra, the test tools)
# with hashes, for CPython 3.11 on Linux. `make lock` re-resolves it after a pin in pyproject.toml changes.
UV_VERSION := 0.13.9
UV := .cache/uv-$(UV_VERSION)/bin/uv
LOCK_ARGS := pyproject.toml --extra dev --python-version 3.11 --python-platform linux --generate-hashes

# Exactly the lock (hash-checked), then the project without dependencies: setuptools, its build
# backend, comes from the lock too. pip before 23.3 mishandles extras in hash-checking mode.
$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

lock: $(UV)
	$(UV) pip compile $(LOCK_ARGS) --output-file requirements.lock \
		--custom-compile-command "make lock  # uv $(UV_VERSION): uv pip compile $(LOCK_ARGS) -o requirements.lock"

$(UV):
	$(PY) -m venv .cache/uv-$(UV_VERSION)
	.cache/uv-$(UV_VERSION)/bin/pip install -q uv==$(UV_VERSION)

demo: $(STAMP)
	$(BIN)/crossdock demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy domain connectors tools agents crews knowledge runtime api chat bench twin crossdock

# Needs no servers: embedded Redis and PostgreSQL, unless REDIS_URL / DATABASE_URL point at running ones.
test: $(STAMP) lint
	$(BIN)/pytest

# LLM mode against a real local model (SmolLM2-135M on llama-cpp-python, its own venv under .cache/):
# builds or reuses the server wheel (/var/cache/crossdock/wheels), starts the model on 127.0.0.1 for the
# session and stops it at the end. Not part of `make test` (minutes of model time on 2 cores).
test-llm: $(STAMP)
	scripts/llm_server.sh setup
	CROSSDOCK_TEST_LLM=1 $(BIN)/pytest tests/llm -s

bench: $(STAMP)
	$(BIN)/crossdock bench intake

serve: $(STAMP)
	$(BIN)/crossdock serve
