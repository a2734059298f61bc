"""A DAG file imports our operator, sensor and transfer modules every parse cycle: they stay cheap."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

#: Loaded by these imports, they would cost every DAG parse: HTTP clients, model building, retry
#: machinery, Airflow's trigger modules. Our hooks and models pull them in, so those load lazily.
HEAVY = ("aiohttp", "pydantic", "tenacity", "requests", "urllib3", "airflow.triggers", "av")
OURS_HEAVY = (
    "airflow_provider_kling.hooks",
    "airflow_provider_kling.stitch",
    "airflow_provider_kling.film",
    "airflow_provider_kling.models",
    "airflow_provider_kling.triggers",
    "airflow_provider_kling.ui",
)

PROBE = """
import json, sys
from airflow.providers.common.compat.sdk import BaseOperator, BaseOperatorLink, BaseSensorOperator, XCom
from airflow.providers.common.compat.sdk import DecoratedOperator, TaskGroup  # Airflow's own, as @task loads them
before = set(sys.modules)
import airflow_provider_kling.operators.kling
import airflow_provider_kling.sensors.kling
import airflow_provider_kling.transfers.kling_to_storage
import airflow_provider_kling.operators.stitch
import airflow_provider_kling.decorators.stitch
import airflow_provider_kling.storyboard
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_dag_parse_imports_no_heavy_module_beyond_airflows_own():
    added = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout)
    heavy = [name for name in added if name.startswith(HEAVY + OURS_HEAVY)]
    assert heavy == [], f"importing the DAG-facing modules loaded {heavy}"
    assert "airflow_provider_kling.operators.kling" in added  # the probe did import them
    assert "airflow_provider_kling.storyboard" in added  # a storyboard's DAG file too: no PyAV until a stitch runs


REVIEW_PROBE = """
import json, sys
from airflow.providers.common.compat.sdk import BaseOperator, BaseOperatorLink, BaseSensorOperator, XCom
from airflow.providers.standard.operators.hitl import HITLBranchOperator
before = set(sys.modules)
import airflow_provider_kling.operators.review
print(json.dumps(sorted(set(sys.modules) - before)))
"""


@pytest.mark.skipif(not AIRFLOW_V_3_1_PLUS, reason="the review operator needs Airflow 3.1+ (human-in-the-loop)")
def test_the_review_operator_adds_nothing_heavy_to_airflows_own_hitl_operator():
    added = json.loads(
        subprocess.run([sys.executable, "-c", REVIEW_PROBE], capture_output=True, text=True, check=True).stdout
    )
    heavy = [name for name in added if name.startswith(HEAVY + OURS_HEAVY)]
    assert heavy == [], f"importing the review operator loaded {heavy}"
    assert "airflow_provider_kling.operators.review" in added


PLUGIN_PROBE = """
import json, sys
before = set(sys.modules)
import airflow_provider_kling.testing.pytest_plugin
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_the_pytest_plugin_loads_no_server_until_a_test_asks_for_the_simulator():
    """Every pytest run of every user who installs the provider loads the plugin."""
    added = json.loads(
        subprocess.run([sys.executable, "-c", PLUGIN_PROBE], capture_output=True, text=True, check=True).stdout
    )
    assert "airflow_provider_kling.testing.pytest_plugin" in added
    heavy = [
        name
        for name in added
        if name == "airflow" or name.startswith(("aiohttp", "airflow.", "airflow_provider_kling.testing.simulator"))
    ]
    assert heavy == [], f"importing the pytest plugin loaded {heavy}"


SENSOR_PROBE = """
import json, sys
import airflow_provider_kling.sensors.kling
print(json.dumps(sorted(sys.modules)))
"""


def test_the_sensor_does_not_import_the_operator_module():
    """A DAG of sensors alone pays for the sensor, not for the operator (and its link and resume code)."""
    loaded = json.loads(
        subprocess.run([sys.executable, "-c", SENSOR_PROBE], capture_output=True, text=True, check=True).stdout
    )
    assert "airflow_provider_kling.sensors.kling" in loaded
    assert "airflow_provider_kling.operators.kling" not in loaded


UI_PLUGIN_PROBE = """
import json, sys
import airflow.plugins_manager
before = set(sys.modules)
import airflow_provider_kling.ui.plugin
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_every_airflow_process_loads_the_ui_plugin_without_its_routes():
    """Every process (a task's too) loads plugins at start: FastAPI and the routes wait for the API server."""
    added = json.loads(
        subprocess.run([sys.executable, "-c", UI_PLUGIN_PROBE], capture_output=True, text=True, check=True).stdout
    )
    assert "airflow_provider_kling.ui.plugin" in added
    heavy = [name for name in added if name.startswith(("fastapi", "starlette", "sqlalchemy", *HEAVY, *OURS_HEAVY[:3]))]
    assert heavy == [], f"loading the UI plugin imported {heavy}"
    assert "airflow_provider_kling.ui.app" not in added
