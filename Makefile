# Shortcuts around scripts/ and the hashinsight command (CONTRACTS.md: make up/down/logs).
BIN  ?= build/bin/hashinsight
DATA ?= $(or $(HI_DATA_DIR),$(if $(filter 0,$(shell id -u)),/var/lib/hashinsight,$(CURDIR)/var))

.PHONY: up down logs migrate seed test build

build:
	scripts/bootstrap
	scripts/build

up:
	scripts/up --detach --data-dir $(DATA)

down:
	@pid=$$(grep -o '"pid": *[0-9]*' $(DATA)/up.json 2>/dev/null | grep -o '[0-9]*$$'); \
	if [ -n "$$pid" ] && kill -0 $$pid 2>/dev/null; then \
	  kill -TERM $$pid; while kill -0 $$pid 2>/dev/null; do sleep 0.2; done; echo "stopped ($$pid)"; \
	else echo "not running"; fi

logs:
	tail -F $(DATA)/logs/*.log

migrate: build
	HI_DATA_DIR=$(DATA) $(BIN) migrate

seed: build
	HI_DATA_DIR=$(DATA) $(BIN) seed

test:
	scripts/test
