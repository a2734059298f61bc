#!/usr/bin/env bash
# The versions we declare, tested: our whole suite at the lowest versions pyproject.toml allows for
# our direct dependencies, on Airflow 2.11.0 and 3.3.0, the rest resolved as of that release's day;
# and a smoke run (a deferred generation, a copy, the `kling` command) on the newest patch of the
# minor lines between (3.1, 3.2), resolved as of its release's day (what Airflow's constraints file
# of the time would give; `--exclude-newer`).
#
#   scripts/compat.sh UV PYTHON            run every profile from constraints/*.txt (no resolution)
#   scripts/compat.sh UV PYTHON PROFILE..  run these profiles
#   scripts/compat.sh UV PYTHON --lock     re-resolve constraints/*.txt (reads the package registries)
set -euo pipefail
cd "$(dirname "$0")/.."
UV=$1 PYTHON=$2
shift 2

# profile | Airflow (and what else its day needs) | resolution | resolved as of | run
# Airflow 3.3.0 allows pydantic 2.11, but its api-server (fastapi 0.136) calls FieldInfo._copy, which
# came with pydantic 2.12: not ours to fix, and no user of 3.3 meets it (its constraints pin newer).
PROFILES=(
  "lowest-airflow-2.11|apache-airflow==2.11.0|lowest-direct|2025-05-21|suite"
  "lowest-airflow-3.3|apache-airflow==3.3.0 pydantic>=2.12|lowest-direct|2026-07-07|suite"
  "airflow-3.1|apache-airflow==3.1.8|highest|2026-03-12|smoke"
  "airflow-3.2|apache-airflow==3.2.2|highest|2026-05-30|smoke"
)
# Our floor of common-compat (1.14.1) came out after some of these Airflow releases: a user of those
# upgrades it, so it is resolved as of its own day there. The test tools are those of uv.lock.
COMPAT_FLOOR_DAY=2026-03-14
TEST_TOOLS=(pytest==9.2.0 pytest-asyncio==1.5.0 pytest-mock==3.17.0 pytest-timeout==2.4.0 pytest-xdist==3.8.0)
# The budget ledger's stores, opened through their providers' hooks: resolved with the profile (the
# lowest we declare, in pyproject.toml's dev group and extras, or as of the profile's day).
LEDGER_STORES=("apache-airflow-providers-sqlite>=4.0" "apache-airflow-providers-postgres>=6.0")
# ...and the rules for strings we did not write, the review's stale-form refusal among them, which
# takes another path before 3.3 (HITLTrigger); and that each of them loads the UI plugin.
SMOKE=(
  "tests/dags/test_example_dags.py::test_main_example_generates_stores_and_notifies"
  "tests/transfers"
  "tests/test_cli.py"
  "tests/test_untrusted.py"
  "tests/test_ui_plugin.py"
)

field() { cut -d'|' -f"$2" <<<"$1"; }
later() { [[ "$1" > "$2" ]] && echo "$1" || echo "$2"; }

lock() {
  local profile=$1 name airflow resolution day
  name=$(field "$profile" 1) airflow=$(field "$profile" 2) resolution=$(field "$profile" 3) day=$(field "$profile" 4)
  local input
  input=$(mktemp)
  printf '%s\n' $airflow "${TEST_TOOLS[@]}" "${LEDGER_STORES[@]}" >"$input"
  local newer=(--exclude-newer "$day" --exclude-newer-package "apache-airflow-providers-common-compat=$(later "$day" $COMPAT_FLOOR_DAY)")
  for tool in "${TEST_TOOLS[@]}"; do newer+=(--exclude-newer-package "${tool%%==*}=2026-12-01"); done
  "$UV" pip compile --quiet --python "$PYTHON" --resolution "$resolution" "${newer[@]}" \
    --no-header --output-file "constraints/$name.txt" pyproject.toml "$input"
  sed -i "s|$input|the test tools|" "constraints/$name.txt"  # not this machine's temporary file name
  rm -f "$input"
  echo "constraints/$name.txt: $(grep -E '^apache-airflow(-providers-common-compat)?==' "constraints/$name.txt" | tr '\n' ' ')"
}

run() {
  local profile=$1 name what venv
  name=$(field "$profile" 1) what=$(field "$profile" 5) venv=".venv-compat/$name"
  echo "== $name: $(grep -E '^apache-airflow==' "constraints/$name.txt") ($what)"
  "$UV" venv --quiet --allow-existing --python "$PYTHON" "$venv"
  VIRTUAL_ENV=$venv "$UV" pip sync --quiet "constraints/$name.txt"
  VIRTUAL_ENV=$venv "$UV" pip install --quiet --no-deps -e .
  # Deprecations are errors in `make test`; here older libraries' own ones (Flask's, anyio's plugin
  # under today's pytest) are not ours. In PYTEST_ADDOPTS, so the test kit's own pytest run gets it too.
  export PYTEST_ADDOPTS="-W default::DeprecationWarning -W default::PendingDeprecationWarning"
  if [[ $what == suite ]]; then
    # The UI tests drive a browser through Playwright, a tool of `make test` only.
    "$venv/bin/pytest" -q ${PYTEST_PARALLEL:-} --ignore=tests/ui
  else
    "$venv/bin/pytest" -q "${SMOKE[@]}"
  fi
}

selected=()
if [[ ${1:-} == --lock ]]; then
  for profile in "${PROFILES[@]}"; do lock "$profile"; done
  exit 0
fi
for profile in "${PROFILES[@]}"; do
  if [[ $# -eq 0 ]] || [[ " $* " == *" $(field "$profile" 1) "* ]]; then selected+=("$profile"); fi
done
for profile in "${selected[@]}"; do run "$profile"; done
