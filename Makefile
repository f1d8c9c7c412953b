# The two commands of a new user (each sets itself up on a fresh machine):
#   make table1   build results/table1.csv of the demo suite
#   make test     run the test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.ordclip-installed
# Snakemake's jobs run `python -m ordclip`: that must be the environment's Python.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: table1 test test-fast env

table1: $(STAMP)
	snakemake --cores all results/table1.csv

test: $(STAMP)
	python -m pytest

test-fast: $(STAMP)
	python -m pytest -m "not slow"

env: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements.lock
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q --no-deps -e .
	touch $@
