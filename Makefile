# The only entry points a person needs. Everything installs itself here: nothing relies on
# what was installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export ILP_INTEROP_DIR ?= $(abspath ../shared/interop)

.PHONY: install test check lint types bench demo docs interop clean

install: $(STAMP) interop

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The JavaScript reference peers (../shared/interop): installed from its lockfile when missing.
interop:
	@if [ -f "$(ILP_INTEROP_DIR)/package.json" ] && [ ! -d "$(ILP_INTEROP_DIR)/node_modules" ]; then \
		echo "npm ci in $(ILP_INTEROP_DIR)"; \
		(cd "$(ILP_INTEROP_DIR)" && npm ci --no-audit --no-fund); \
	fi

test: install
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check ilp cli tests bench
	$(PY) -m ruff format --check ilp cli tests bench

types: $(STAMP)
	mkdir -p build/mypy && ln -sfn ../../cli build/mypy/ilp_cli
	$(PY) -m mypy

check: lint types test

bench: install
	$(PY) -m bench

# A real payment on this machine through our own node: ilp node, ilp receive, ilp pay (cli/demo.py).
# Needs nothing but this repository (not ../shared).
demo: $(STAMP)
	$(PY) -m ilp_cli.demo

# The docs are Markdown in docs/; this checks that their examples still run.
docs: install
	$(PY) -m pytest -q tests/test_docs.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
