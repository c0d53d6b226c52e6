# The two commands: `make run` (default sweep + export) and `make test` (lint, types, tests).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Tests and CI read the shared copy; without it the loader fetches the data from OpenML.
IONOSPHERE_CSV ?= $(wildcard $(CURDIR)/../shared/data/ionosphere.csv)
export IONOSPHERE_CSV

.PHONY: install run test

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

run: install
	$(BIN)/sweeps run --out best.json

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest
