# The two commands of a new user (each sets itself up on a fresh machine):
#   make table1   build results/table1.csv of the demo suite
#   make test     run the test suite
# On a machine whose NVIDIA driver is older than 580: make LOCK=requirements-cu12.lock env, once.
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

# LOCK=requirements-cu12.lock installs the CUDA 12 build of torch instead (NVIDIA drivers older than 580).
LOCK ?= requirements.lock

$(STAMP): $(LOCK) pyproject.toml
	@echo "==> Installing into $(VENV)/ the pinned environment of $(LOCK),"
	@echo "    $$(grep -c '==' $(LOCK)) packages: torch and torchvision ($$(sed -n 's/^# CUDA: //p' $(LOCK))),"
	@echo "    open_clip_torch, snakemake + SLURM executor, dvc, scikit-learn, pandas, pytest."
	@echo "    About 6 GB to download and 4 minutes; pip prints each package as it goes."
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --disable-pip-version-check --progress-bar off -r $(LOCK)
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q --no-deps -e .
	@echo "==> $(VENV)/ is ready ($(LOCK)); make installs again only when $(LOCK) or pyproject.toml changes."
	touch $@
