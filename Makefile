# posgw: two commands on a fresh machine.
#   make run    set everything up (venv, install, embedded PostgreSQL, migrations, demo data), start the gateway
#   make test   set everything up and run the whole test suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test install migrate demo clean db-stop

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/posgw db migrate

demo: migrate
	$(BIN)/posgw demo

run: demo
	exec $(BIN)/posgw serve

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

db-stop:
	-$(BIN)/posgw db stop

clean: db-stop
	rm -rf $(VENV) var .pytest_cache
