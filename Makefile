# mimamori — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV  ?= .venv
PY    := $(VENV)/bin/python
PIP   := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: help deps system-deps lint typecheck test test-unit test-mpy test-integration test-deploy hil soak bench demo clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

system-deps:  ## Debian packages the tests need (installed when run as root)
	@bash tools/bootstrap.sh

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -e '.[dev,demo]'  # dev: tests, lint, type checks; demo: the SMTP sink, the SFTP server
	@touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

deps: system-deps $(STAMP) node_modules/.package-lock.json  ## everything: system packages, venv, npm packages

lint: deps  ## ruff (lint and format check) and the import contracts in .importlinter
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

TYPINGS := build/typings
MPY_STUBS := micropython-esp32-stubs==1.29.0.post1

$(TYPINGS)/.installed: $(STAMP)
	rm -rf $(TYPINGS)
	$(PIP) install -q --no-deps --target $(TYPINGS) $(MPY_STUBS) micropython-stdlib-stubs==1.29.0.post2
	@touch $@

DEVICE_FILES = $(shell $(PY) -c 'from tests.support.micropython import device_files; print(" ".join(device_files()))')

typecheck: deps $(TYPINGS)/.installed  ## mypy: CPython packages, and device code against the MicroPython stubs
	$(VENV)/bin/mypy protocol cloud firmware_sim edge/installer edge/host
	MYPYPATH=$(TYPINGS) $(VENV)/bin/mypy --config-file tools/mypy_device.ini --custom-typeshed-dir $(TYPINGS) $(DEVICE_FILES)

# pytest-xdist workers for `make test`. Most of the suite waits on brokers,
# databases, Chromium, the virtual board and its own timers rather than on a
# core: on the 2-core reference machine four workers kept 1.4 cores busy and
# finished first (docs/benchmarks.md, "Test suite durations").
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 4

test: deps lint typecheck  ## lint, type checks and every test tier (in parallel: TEST_WORKERS)
	$(PY) -m pytest -p no:cacheprovider -n $(TEST_WORKERS)

test-unit: deps  ## the CPython unit tests only
	$(PY) -m pytest tests/unit

test-mpy: deps  ## the MicroPython tier only
	$(PY) tools/mpy_test.py

test-integration: deps  ## the tests against real services only
	$(PY) -m pytest tests/integration

test-deploy: deps  ## the production install end to end: mimamori-admin install into a scratch root, every unit started (about 2 min)
	$(PY) -m pytest -p no:cacheprovider -m deploy -s tests/deploy

hil: deps  ## hardware-in-the-loop suite: virtual terminal and board (the virtual board, or the one hil_tests/hardware.toml names)
	@mkdir -p build
	$(PY) -m pytest -p no:cacheprovider hil_tests --junitxml=build/hil-junit.xml
# the issue's full two-minute broker outage: HIL_BROKER_OUTAGE_S=120 make hil

soak: deps  ## long fault profile: 100 terminals, 20 kills per component, long fuzzing
	MIMAMORI_PROFILE=long $(PY) -m pytest -p no:cacheprovider tests/faults

bench: deps  ## benchmarks (several minutes); output in build/bench/, figures go to docs/benchmarks.md
	@mkdir -p build/bench
	$(PY) bench/bench_protocol.py | tee build/bench/protocol.txt
	$(PY) bench/bench_agent_heap.py --json build/bench/agent_heap.json | tee build/bench/agent_heap.txt
	$(PY) bench/bench_ingest.py | tee build/bench/ingest.txt
	$(PY) bench/bench_timeseries.py --json build/bench/timeseries.json | tee build/bench/timeseries.txt
	$(PY) bench/bench_web.py --json build/bench/web.json | tee build/bench/web.txt
	$(PY) bench/bench_fleet_web.py --postgres --json build/bench/fleet_web.json | tee build/bench/fleet_web.txt
	$(PY) bench/bench_alarm_latency.py --json build/bench/alarm_latency.json | tee build/bench/alarm_latency.txt
	$(PY) bench/bench_ota.py --json build/bench/ota.json | tee build/bench/ota.txt

demo: deps  ## the whole service on this machine: broker, cloud, 20 virtual terminals and 2 MicroPython boards (Ctrl-C stops)
	$(PY) -m cloud.demo --boards 2

clean:  ## remove build output and tool caches
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache
