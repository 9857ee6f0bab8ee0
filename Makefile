# The README's two commands are `make run` and `make test`; both work on a fresh
# Debian 12 machine as root (they install what they need, Debian packages included).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= sipwarden.toml
# The sample capture `make monitor` analyses.
PCAP   ?= ../shared/testdata/captures/svwar.pcap

.PHONY: run monitor test lint typecheck unit system-deps venv dev bench fuzz clean

$(BIN)/python:
	@$(PYTHON) -m venv --help >/dev/null 2>&1 && $(PYTHON) -c 'import ensurepip' 2>/dev/null \
	  || bash scripts/install-system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install -q -e .

dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

system-deps:
	bash scripts/install-system-deps

## run: the main job, the gateway, with the example config and the embedded default store
##      (listens on 5060 for a PBX moved to 127.0.0.1:5080; Ctrl-C stops it)
run: venv
	$(BIN)/sipwarden --config $(CONFIG) gateway

## monitor: the passive monitor on a sample capture of a SIPVicious sweep
monitor: venv
	$(BIN)/sipwarden --config $(CONFIG) monitor --pcap $(PCAP)

## test: everything CI checks — lint, types, the whole suite
test: system-deps dev lint typecheck unit

lint:
	$(BIN)/ruff check src tests bench fuzz
	$(BIN)/ruff format --check src tests bench fuzz

typecheck:
	$(BIN)/mypy

unit:
	$(BIN)/pytest -q

bench: dev
	$(BIN)/python bench/parse.py
	$(BIN)/python bench/monitor.py --generate

fuzz: $(BIN)/python
	$(BIN)/pip install -q -e '.[fuzz]'
	$(BIN)/python fuzz/fuzz_parser.py -max_total_time=$${FUZZ_SECONDS:-60} fuzz/corpus

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .pytest_cache .ruff_cache .hypothesis
