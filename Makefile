# Kasparro ETL. `make run` starts everything locally; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Docker Compose v2 plugin when present, else the v1 docker-compose binary.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
export COMPOSE_PROJECT_NAME ?= kasparro

.PHONY: help run serve test bench bench-e2e bench-full up down init-db env venv fake-upstream etl-run status demo-recovery clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed ## create the virtualenv and install the requirements

env: ## create .env from .env.example and generate missing secrets (kept there, never printed)
	@sh scripts/ensure-env.sh .env

init-db: venv env ## create the database if missing and apply the migrations
	$(BIN)/flask --app wsgi etl init-db

run: venv env ## everything, on local PostgreSQL/Redis under var/ unless DATABASE_URL/BROKER_URL are set (Ctrl-C stops all)
	$(BIN)/python -m kasparro.embedded run -- $(MAKE) --no-print-directory serve

serve: init-db ## migrate, then API, worker, beat, Flower and the fake upstream against the configured servers
	@mkdir -p var
	@# Every server of `make run` listens on 127.0.0.1 only; GUNICORN_BIND=0.0.0.0:8000 widens the API's.
	@# The URLs as configured (GUNICORN_BIND, FLOWER_PORT), and where the API key comes from (never the key).
	@$(BIN)/python -m kasparro.banner
	@# kasparro.procfile runs the Procfile as honcho does (JSON lines only with LOG_FORMAT=json) and reads no .env:
	@# kasparro.withenv lays .env under the shell's variables, where honcho would have laid it over them.
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m kasparro.withenv $(BIN)/python -m kasparro.procfile -f Procfile

test: venv ## the suite, on local PostgreSQL/Redis under var/ unless TEST_DATABASE_SERVER/TEST_BROKER_URL are set
	$(BIN)/python -m kasparro.embedded test -- $(BIN)/python -m pytest

bench: venv ## load speed against a plain COPY of the same file; own servers under var/ unless BENCH_DATABASE_SERVER/BENCH_BROKER_URL are set (BENCH_ARGS="--rows ... --workers ...")
	$(BIN)/python -m kasparro.embedded bench -- $(BIN)/python -m bench $(BENCH_ARGS)

bench-e2e: venv ## the same load through the whole stack of `make run`, each run a POST /run-etl polled to its end, against psql's \copy; own servers as for bench (BENCH_ARGS="--rows ... --repeat ...")
	$(BIN)/python -m kasparro.embedded bench -- $(BIN)/python -m bench --e2e $(BENCH_ARGS)

bench-grow: venv ## the table grown through the whole stack, 2M rows a step to 20M: each load and the API's reads after it (BENCH_ARGS="--rows ... --grow STEPS")
	$(BIN)/python -m kasparro.embedded bench -- $(BIN)/python -m bench --e2e $(or $(BENCH_ARGS),--rows 2000000 --grow 9)

bench-full: venv ## the issue's matrix: 1M and 5M rows x 1 and 2 worker processes, median of 3 (hours)
	$(BIN)/python -m kasparro.embedded bench -- $(BIN)/python -m bench --rows 1000000,5000000 --workers 1,2 --repeat 3 --skip-paging

etl-run: venv ## queue a run of every enabled source and follow it (reaches a running `make run`'s servers)
	$(BIN)/python -m kasparro.embedded use -- $(BIN)/flask --app wsgi etl run --wait

status: venv ## one screen: last run per source, freshness, schedule, health (reaches a running `make run`'s servers)
	$(BIN)/python -m kasparro.embedded use -- $(BIN)/flask --app wsgi etl status

demo-recovery: venv ## with `make run` up: inject a failed load and a killed worker, show the resumed totals (reaches its servers)
	$(BIN)/python -m kasparro.embedded use -- $(BIN)/python -m scripts.demo_recovery

fake-upstream: venv ## serve recorded CoinPaprika/CoinGecko payloads on :8900
	$(BIN)/python -m kasparro.fake_upstream --port 8900

up: ## build, start the compose stack (with the fake upstream when OFFLINE is on), wait, print URLs
	sh scripts/ensure-env.sh .env
	$(COMPOSE) build migrate
	@# The fake upstream is in the `demo` profile: started only when OFFLINE (shell, else .env) is on.
	offline="$${OFFLINE:-$$(sed -n 's/^OFFLINE=//p' .env | tail -n 1)}"; \
	case "$$(echo "$$offline" | tr A-Z a-z)" in 1|true|yes|on) profile="--profile demo" ;; *) profile="" ;; esac; \
	$(COMPOSE) $$profile up -d
	COMPOSE="$(COMPOSE)" sh docker/wait-healthy.sh api 180
	@echo "API:    http://localhost:$$($(COMPOSE) port api 8000 | sed 's/.*://')  (GET /health, /docs)"
	@echo "Flower: http://localhost:$$($(COMPOSE) port flower 5555 | sed 's/.*://')  (login: FLOWER_BASIC_AUTH in .env)"

down: ## stop the compose stack (keeps the database volume)
	$(COMPOSE) --profile demo --profile observability down --remove-orphans

clean: ## remove the virtualenv and local state
	rm -rf $(VENV) var
