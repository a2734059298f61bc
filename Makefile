# The commands the README names. Everything installs from this repo's own files:
# a pinned uv, then the exact dependency set of uv.lock.
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
export UV_PYTHON_DOWNLOADS := never
# The suite on two processes, a test file each at a time (pytest-xdist): most of its time is spent
# waiting on servers, not computing. PYTEST_PARALLEL= runs it on one.
PYTEST_PARALLEL ?= -n 2 --dist loadfile

.PHONY: demo ui test test-airflow2 compat lint docs dist sync bench cluster screenshots chromium postgresql

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

sync: $(UV)
	$(UV) sync --locked --quiet --python $(PYTHON)

## Run the example DAG end to end (simulator, or RunComfy when RUNCOMFY_API_TOKEN is set).
demo: sync
	bash scripts/demo.sh

## Airflow's UI over the demo's takes (the Kling page and each take's tab), on 127.0.0.1:8080.
ui: sync
	bash scripts/ui.sh

## The OS's Chromium, which the UI tests drive (Debian's package, installed when missing).
chromium:
	bash scripts/os_packages.sh chromium=chromium

## The OS's PostgreSQL, which the budget ledger's tests start in a temporary folder (Debian's package).
postgresql:
	bash scripts/os_packages.sh "/usr/lib/postgresql/*/bin/pg_ctl=postgresql"

## Run the whole test suite (the UI tests drive the OS's Chromium, installed here when missing).
test: sync chromium postgresql
	.venv/bin/pytest $(PYTEST_PARALLEL)

## The UI tests alone, writing their screenshots into docs/img/ (the ones the docs show).
screenshots: sync chromium
	KLING_SCREENSHOTS=docs/img .venv/bin/pytest tests/ui --basetemp=/tmp/kling-ui

## The whole suite again on the oldest supported Airflow (2.11), in its own environment.
test-airflow2: $(UV) postgresql
	UV_PROJECT_ENVIRONMENT=.venv-airflow2 $(UV) sync --locked --quiet --python $(PYTHON) \
		--no-default-groups --group dev --group airflow2
	.venv-airflow2/bin/pytest $(PYTEST_PARALLEL)

## The declared versions, tested: the suite at the lowest direct dependencies (Airflow 2.11.0, 3.3.0),
## a smoke run on Airflow 3.1 and 3.2 as of their release days (constraints/*.txt, into .venv-compat/).
compat: $(UV) postgresql
	PYTEST_PARALLEL="$(PYTEST_PARALLEL)" bash scripts/compat.sh $(UV) $(PYTHON)

## The documentation site, built in strict mode (any warning fails), into .docs-site/.
docs: $(UV)
	$(UV) sync --locked --quiet --python $(PYTHON) --group docs
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir .docs-site

## Build the wheel and sdist into dist/, install the wheel in a clean environment, check it registers.
dist: $(UV)
	bash scripts/check_dist.sh $(UV) $(PYTHON)

## Lint, format check and type check.
lint: sync
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

## Benchmarks beside their peers (not part of the tests); writes docs/performance.md. BENCH_ARGS=--only=ui (or film): those rows alone
## (nginx and ffmpeg, the OS's packages, are the peers of the video and stitch rows; only yardsticks, never the product's).
bench: $(UV) chromium postgresql
	bash scripts/os_packages.sh nginx=nginx ffmpeg=ffmpeg
	$(UV) sync --locked --quiet --python $(PYTHON) --group bench
	.venv/bin/python benchmarks/bench.py $(BENCH_ARGS)

## Airflow on PostgreSQL, Redis and Celery (2 workers, 2 triggerers) with faults while generations are
## in flight; checks nothing was lost or paid twice and writes docs/cluster.md. CLUSTER_ARGS=--quick: CI's size; --bench: 100 paying runs, no fault.
cluster: $(UV)
	UV_PROJECT_ENVIRONMENT=.venv-cluster $(UV) sync --locked --quiet --python $(PYTHON) --group cluster
	bash scripts/cluster.sh $(CLUSTER_ARGS)
