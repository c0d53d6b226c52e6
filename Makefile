# The two commands: `make run` (default sweep, export, report) and `make test` (lint, types,
# test packages, tests). CI also runs `make test-lowest`: the suite but its slow multi-process tests,
# with Optuna, SQLAlchemy, pandas, scikit-learn and NumPy at the floors pyproject.toml declares.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
LOWEST := .venv-lowest
# Tests and CI read the shared copy; without it the loader fetches the data from OpenML.
IONOSPHERE_CSV ?= $(wildcard $(CURDIR)/../shared/data/ionosphere.csv)
export IONOSPHERE_CSV

# Browser tests drive Debian's Chromium through its ChromeDriver, the pooling test runs Debian's
# PgBouncer in front of the test PostgreSQL, the SLURM test a one-node slurm-wlm with munge;
# installed once, never downloaded by the tests.
TEST_PACKAGES := chromium chromium-driver pgbouncer slurm-wlm munge
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install test-packages run test test-lowest

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# The project's environment copied, then the five floored packages put at their floors (a copy's
# scripts still name .venv's interpreter: its tools run as `python -m`).
$(LOWEST)/.installed: $(VENV)/.installed .ci/lowest.py
	rm -rf $(LOWEST) && cp -a $(VENV) $(LOWEST)
	$(BIN)/python .ci/lowest.py > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/python -m pip install --quiet -c $(LOWEST)/constraints.txt \
	  optuna sqlalchemy pandas scikit-learn numpy
	touch $@

run: install
	$(BIN)/sweeps run --out best.json
	$(BIN)/sweeps report --study lrsweep --out report

test-packages:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver -a -x /usr/sbin/pgbouncer \
	  -a -x /usr/sbin/slurmctld -a -x /usr/sbin/slurmd -a -x /usr/sbin/munged || \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive sh -c \
	  'apt-get install -y -q --no-install-recommends $(TEST_PACKAGES) || \
	   (apt-get update -q && apt-get install -y -q --no-install-recommends $(TEST_PACKAGES))'

test: install test-packages
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -m 'not slow' -n 2  # in-process tests: one per core
	$(BIN)/pytest -m 'slow and not races' -n 2  # whole commands, judged by what they leave
	$(BIN)/pytest -m races  # processes raced against each other: one test at a time

test-lowest: $(LOWEST)/.installed test-packages
	$(LOWEST)/bin/python .ci/lowest.py --check
	$(LOWEST)/bin/python -m pytest -m 'not slow' -n 2 -p no:cacheprovider \
	  --ignore tests/test_packaging.py  # pip's view of the pinned project, not the floors'
