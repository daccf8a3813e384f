# Two commands set everything up on a fresh machine:
#   make run    install into .venv and run the hub on the embedded SQLite store
#   make test   install into .venv (with test extras) and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test test-nats lint bench docs clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	@echo "wsbus is installed in $(BIN): in another terminal, '. $(BIN)/activate' puts wsbus on PATH"
	$(BIN)/wsbus serve $(ARGS)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(ARGS)

# the whole suite again, every hub on a bus of a real nats-server (docs/DEPLOY.md)
test-nats: $(VENV)/.installed-dev
	WSBUS_TEST_ENGINE=nats $(BIN)/python -m pytest $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench $(ARGS)

docs: $(VENV)/.installed-dev
	$(BIN)/python -m docs.protodoc > docs/PROTOCOL.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
