# fptrace: the two commands a user needs are `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
# In CI an integration test that skips is a failure (tests/conftest.py reads this).
export FPTRACE_NO_SKIP ?= $(if $(CI),1,)

.PHONY: setup demo test unit integration lint format bench bench-report clean

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) -m fptrace.workloads.demo

test: setup lint
	$(PY) -m pytest -rs tests/unit
	$(PY) -m pytest -rs tests/integration

unit: setup
	$(PY) -m pytest -rs tests/unit

integration: setup
	$(PY) -m pytest -rs tests/integration

lint: setup
	$(VENV)/bin/ruff check fptrace tests scripts
	$(VENV)/bin/ruff format --check fptrace tests scripts

format: setup
	$(VENV)/bin/ruff format fptrace tests scripts
	$(VENV)/bin/ruff check --fix fptrace tests scripts

bench: setup
	$(PY) scripts/bench_overhead.py

bench-report: setup
	$(PY) scripts/bench_report.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
