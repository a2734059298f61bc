#!/usr/bin/env bash
# Build the wheel and the sdist, install the wheel (not the source tree) in a clean environment
# with the locked dependency versions, and check what a user gets: the provider registered with
# Airflow, its UI plugin loaded with its pages, the simulator making its MP4s (PyAV), py.typed shipped, and
# both console scripts working.
set -euo pipefail
uv=$1 python=$2
cd "$(dirname "$0")/.."
root=$PWD
rm -rf dist
"$uv" build --quiet --python "$python" --out-dir dist
wheel=$(ls dist/*.whl) sdist=$(ls dist/*.tar.gz)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$uv" export --locked --quiet --no-dev --no-emit-project --no-hashes --format requirements-txt >"$work/constraints.txt"
"$uv" venv --quiet --python "$python" "$work/venv"
"$uv" pip install --quiet --python "$work/venv/bin/python" -c "$work/constraints.txt" "$wheel"

export AIRFLOW_HOME=$work/home AIRFLOW__CORE__LOAD_EXAMPLES=False
cd "$work"  # away from the source tree, so only the installed wheel can be imported
"$work/venv/bin/python" - "$root" <<'PY'
import sys
from pathlib import Path

import airflow_provider_kling
from airflow_provider_kling.testing.simulator import sample_video

root = Path(sys.argv[1])
package = Path(airflow_provider_kling.__file__).parent
assert not package.is_relative_to(root), f"imported from the source tree: {package}"
assert (package / "py.typed").exists(), "py.typed is missing from the wheel"
video = sample_video()
assert video[4:8] == b"ftyp", "the simulator cannot make its MP4s (PyAV)"
print(f"wheel OK: {package.name} {airflow_provider_kling.__version__}, sample MP4 {len(video)} bytes")
PY
"$work/venv/bin/airflow" providers list 2>/dev/null | grep -q "airflow-provider-kling" \
    || { echo "the installed wheel does not register the provider with Airflow"; exit 1; }
"$work/venv/bin/airflow" plugins --output json 2>/dev/null | grep -q "airflow_provider_kling.ui.plugin" \
    || { echo "the installed wheel's UI plugin is not loaded by Airflow"; exit 1; }
"$work/venv/bin/python" -c 'from importlib.resources import files; assert files("airflow_provider_kling.ui").joinpath("static").joinpath("kling.js").is_file()' \
    || { echo "the wheel lacks the UI plugin's pages"; exit 1; }
"$work/venv/bin/kling" --help >/dev/null
"$work/venv/bin/kling-simulator" --help >/dev/null
tar -tzf "$root/$sdist" >"$work/sdist.txt"
grep -q "/airflow_provider_kling/facets/KlingVideoDatasetFacet.json$" "$work/sdist.txt" || { echo "the sdist lacks the video facet's schema"; exit 1; }
echo "dist OK: $(basename "$wheel") registers with Airflow, its UI plugin loads; $(basename "$sdist") built"
