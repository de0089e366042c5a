# posgw: two commands on a fresh machine.
#   make run    set everything up (venv, install, embedded PostgreSQL, migrations, demo data), start the gateway
#               and the back office (http://127.0.0.1:8080/, user admin, its password printed the first time)
#   make test   set everything up (the Debian packages the tests need too) and run the whole test suite

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test test-tools install migrate demo clean db-stop

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,fuzz]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/posgw db migrate

demo: migrate
	$(BIN)/posgw demo

run: demo
	$(BIN)/posgw web --demo-admin & web=$$!; trap 'kill $$web 2>/dev/null' EXIT INT TERM; $(BIN)/posgw serve

# Debian packages the tests need (HAProxy, Prometheus, PostgreSQL 15, pg_auto_failover): installed when missing.
test-tools:
	@deploy/test-tools.sh

test: install test-tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# make fuzz: each atheris target of tests/fuzz/fuzz_targets.py for FUZZ_SECONDS.
# A crash fails it and is saved under tests/fuzz/crashes/<target>/, which make
# test replays; inputs that add coverage are merged into tests/fuzz/corpus/<target>/.
FUZZ_SECONDS ?= 60

.PHONY: fuzz

fuzz: install
	@$(BIN)/python -c 'import atheris' 2>/dev/null || { echo 'make fuzz needs atheris (the fuzz extra: Linux x86_64, Python 3.11 to 3.13)'; exit 2; }
	$(BIN)/python -m tests.fuzz.fuzz_targets all -max_total_time=$(FUZZ_SECONDS)

# make bench: the load benchmark and its baselines (bench/run.py): the production
# configuration, the purchase-only rows of before and the big ledger (at most 15 minutes
# is the aim; --no-big-ledger skips its seeding); writes bench/results.json and
# bench/latency.png. BENCH_ARGS=--quick for a short try.
BENCH_STAMP := $(VENV)/.bench-installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: bench

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	rm -f $(VENV)/.bench-installed-*
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# make cluster: docker-compose.yml's topology on this machine, in the foreground
# (deploy/cluster.py): PostgreSQL as a primary and a synchronous standby failed
# over by pg_auto_failover (deploy/pgpair.py, under var/cluster/pgpair, WAL
# archived into var/cluster/archive; the demo world on its first run), two
# gateways (:8584, :8585) that follow the primary, HAProxy on :8583 and
# Prometheus on :9090 (make test-tools installs them all: Debian packages).
# Ctrl-C stops it all. CLUSTER_ARGS=--help for the options.
.PHONY: cluster

cluster: install test-tools
	exec $(BIN)/python deploy/cluster.py --pair $(CLUSTER_ARGS)

db-stop:
	-$(BIN)/posgw db stop

clean: db-stop
	rm -rf $(VENV) var .pytest_cache
