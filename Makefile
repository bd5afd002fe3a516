# Shortcuts around scripts/ and the hashinsight command (CONTRACTS.md: make up/down/logs).
BIN  ?= build/bin/hashinsight
DATA ?= $(or $(HI_DATA_DIR),$(if $(filter 0,$(shell id -u)),/var/lib/hashinsight,$(CURDIR)/var))

.PHONY: up down logs migrate seed test build acceptance bench status

build:
	scripts/bootstrap
	scripts/build

up:
	scripts/up --detach --data-dir $(DATA)

down:
	HI_DATA_DIR=$(DATA) $(BIN) down

logs:
	tail -F $(DATA)/logs/*.log

migrate: build
	HI_DATA_DIR=$(DATA) $(BIN) migrate

seed: build
	HI_DATA_DIR=$(DATA) $(BIN) seed

test:
	scripts/test

# The acceptance steps on a fresh private stack (scripts/acceptance [--bus redis|kafka]).
acceptance:
	HI_BIN=$(abspath $(BIN)) scripts/acceptance

# Each benchmark starts its own durable private stack; one JSON line each (docs/performance.md).
bench:
	$(BIN) bench e2e --rate 200 --duration 60
	$(BIN) bench api
	$(BIN) bench sse --clients 1000

# The running stack's health, redrawn every 2 s (Ctrl-C to stop).
status:
	HI_DATA_DIR=$(DATA) $(BIN) status --watch
