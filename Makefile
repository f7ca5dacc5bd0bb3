# fptrace: the two commands a user needs are `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
# In CI an integration test that skips is a failure (tests/conftest.py reads this).
export FPTRACE_NO_SKIP ?= $(if $(CI),1,)

.PHONY: setup demo test unit fuzz integration kernels lint format bench bench-report clean

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) -m fptrace.workloads.demo

test: setup lint
	$(PY) -m pytest -rs tests/unit
	$(PY) -m pytest -rs tests/fuzz
	$(PY) -m pytest -rs tests/integration
	$(PY) -m pytest -rs tests/kernels

unit: setup
	$(PY) -m pytest -rs tests/unit

integration: setup
	$(PY) -m pytest -rs tests/integration

# Mutated real recordings through every reader (FPTRACE_FUZZ_MUTANTS, FPTRACE_FUZZ_SEED).
fuzz: setup
	$(PY) -m pytest -rs tests/fuzz

# The kernel matrix: Debian 5.10, 6.1, 6.12, 7.x booted in qemu (fptrace lab).
kernels: setup
	$(PY) -m pytest -rs tests/kernels

lint: setup
	$(VENV)/bin/ruff check fptrace tests scripts
	$(VENV)/bin/ruff format --check fptrace tests scripts
	$(VENV)/bin/mypy fptrace

format: setup
	$(VENV)/bin/ruff format fptrace tests scripts
	$(VENV)/bin/ruff check --fix fptrace tests scripts

bench: setup
	$(PY) scripts/bench_overhead.py

bench-report: setup
	$(PY) scripts/bench_report.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
