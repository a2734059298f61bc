# The commands the README names. Everything installs from this repo's own files:
# a pinned uv, then the exact dependency set of uv.lock.
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo test lint sync bench

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

sync: $(UV)
	$(UV) sync --locked --quiet --python $(PYTHON)

## Run the example DAG end to end (simulator, or RunComfy when RUNCOMFY_API_TOKEN is set).
demo: sync
	bash scripts/demo.sh

## Run the whole test suite.
test: sync
	.venv/bin/pytest

## Lint, format check and type check.
lint: sync
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

## Benchmarks beside their peers (not part of the tests); writes docs/performance.md.
bench: $(UV)
	$(UV) sync --locked --quiet --python $(PYTHON) --group bench
	.venv/bin/python benchmarks/bench.py
