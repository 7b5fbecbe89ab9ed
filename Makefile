# Two commands for a newcomer:  `make setup` (once)  and  `make test`.
# `make up` / `make down` run the local stack; everything else is `.venv/bin/fleet --help`.

VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT    := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends

.PHONY: setup system python kafka-jars lock test lint typecheck pytest up down clean demo bench

setup: system python kafka-jars  ## install everything the platform and its tests need

system:  ## Debian packages: Mosquitto, Java 17, Maven (for Kafka's jars), Chromium (UI browser test)
	@missing=""; \
	{ command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; } || missing="$$missing mosquitto"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; $(SUDO) apt-get update -qq && $(APT) $$missing; \
	else echo "system packages present"; fi

python: $(BIN)/fleet  ## a virtualenv with the platform and its test tools

# constraints.txt pins the versions that work together (TF 2.16 holds protobuf < 5, which
# otherwise sends pip's resolver backtracking through google-api-core for many minutes).
# Refresh it with `make lock` after changing dependencies.
$(BIN)/fleet: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[all,test]"
	@touch $@

lock:  ## re-pin constraints.txt from the current virtualenv
	$(BIN)/pip freeze --exclude-editable | grep -v '^fleet-twin' > constraints.txt

# Also builds SecantusDB's Rust server with cargo (once, minutes; a notice if no toolchain).
kafka-jars: python  ## Kafka's jars (Maven Central) and secantusd-rs (crates.io) into the cache, once
	$(BIN)/fleet stack install

test: lint typecheck pytest  ## what CI runs

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest

up:
	$(BIN)/fleet stack up

down:
	$(BIN)/fleet stack down

demo:  ## the whole platform with a simulated fleet (Ctrl-C stops it)
	$(BIN)/fleet demo

bench:  ## every benchmark, then bench/results/report.md
	$(BIN)/fleet bench

clean: down
	rm -rf .fleet
