# Parley: `make run` starts a dev node, `make test` runs everything CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install run test lint typecheck services services-stop cluster cluster-stop chromium bench bench-quick soak clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

run: install
	@echo
	@echo "  Parley dev node on http://127.0.0.1:8000 (embedded log, SQLite in ./.parley)"
	@echo "  Get a token (and a seat in the room 'general'):"
	@echo "      curl -s -XPOST http://127.0.0.1:8000/api/dev/token -d '{\"user\":\"alice\"}'"
	@echo "  or, without joining a room:  $(BIN)/parley token alice --dev"
	@echo "  Connect:  ws://127.0.0.1:8000/ws?token=<token>&room=general   (or open http://127.0.0.1:8000/)"
	@echo
	@$(BIN)/parley serve --dev

lint: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: install
	$(BIN)/mypy

services:
	@bash scripts/services.sh start

services-stop:
	@bash scripts/services.sh stop

cluster:
	@bash scripts/kafka-cluster.sh start

cluster-stop:
	@bash scripts/kafka-cluster.sh stop

# Lint and types first (cheap), then the whole suite against a real broker and
# PostgreSQL that `services` starts (or reuses).
test: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	@bash scripts/chromium.sh >/dev/null
	@set -euo pipefail; \
	  lines=$$(bash scripts/services.sh start | tail -n 2); \
	  export PARLEY_TEST_KAFKA_BOOTSTRAP=$$(echo "$$lines" | sed -n 's/^PARLEY_KAFKA_BOOTSTRAP=//p'); \
	  export PARLEY_TEST_DATABASE_URL=$$(echo "$$lines" | sed -n 's/^PARLEY_DATABASE_URL=//p'); \
	  export PARLEY_TEST_SWEEP_TOPICS=1; \
	  $(BIN)/pytest -q -n 2 --dist loadgroup --durations=15

# The benchmarks of issue 5 (bench/, results in docs/benchmarks.md): Parley against
# python-socketio (KafkaManager, AsyncRedisManager) and Django Channels. The peers,
# the load generator and matplotlib live in their own venv (~/.cache/parley/bench-venv,
# from bench/requirements.txt, made by bench/run.py), never in Parley's dependencies.
# `bench` runs everything at full size (about 25 min) and rewrites docs/benchmarks.md
# and its plots; `bench-quick` runs every scenario at a tiny size (under two minutes).
bench: install
	$(BIN)/python -m bench.run

bench-quick: install
	$(BIN)/python -m bench.run --quick

# Outside CI: 30 minutes at half the measured maximum rate on `make services`;
# memory, descriptors and latency each minute, written to docs/reliability.md.
# More options: make soak SOAK_ARGS="--minutes 5 --rate 200" (see bench/soak.py).
soak: install
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# Debian's Chromium for tests/browser (apt-get, only when /usr/bin/chromium is absent).
chromium:
	@bash scripts/chromium.sh >/dev/null

clean:
	rm -rf $(VENV) .parley .mypy_cache .ruff_cache .pytest_cache
