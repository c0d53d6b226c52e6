# The two commands: `make run` (default sweep, export, report) and `make test` (lint, types,
# browser, tests).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Tests and CI read the shared copy; without it the loader fetches the data from OpenML.
IONOSPHERE_CSV ?= $(wildcard $(CURDIR)/../shared/data/ionosphere.csv)
export IONOSPHERE_CSV

# Browser tests drive Debian's Chromium through its ChromeDriver; installed once, never downloaded
# by the tests themselves.
CHROMIUM_PACKAGES := chromium chromium-driver
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install browser run test

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

run: install
	$(BIN)/sweeps run --out best.json
	$(BIN)/sweeps report --study lrsweep --out report

browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive sh -c \
	  'apt-get install -y -q --no-install-recommends $(CHROMIUM_PACKAGES) || \
	   (apt-get update -q && apt-get install -y -q --no-install-recommends $(CHROMIUM_PACKAGES))'

test: install browser
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest
