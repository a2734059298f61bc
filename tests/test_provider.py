from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import airflow_provider_kling


def test_provider_info_declares_the_connection_type():
    info = airflow_provider_kling.get_provider_info()
    assert info["package-name"] == "airflow-provider-kling"
    assert info["versions"] == [airflow_provider_kling.__version__]
    assert {"connection-type": "kling", "hook-class-name": "airflow_provider_kling.hooks.kling.KlingHook"}.items() <= (
        info["connection-types"][0].items()
    )


def test_airflow_lists_the_provider_and_maps_the_connection_type():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-kling" in manager.providers
    hooks = _runtime_hooks()
    assert hooks["kling"].hook_class_name == "airflow_provider_kling.hooks.kling.KlingHook"


def _runtime_hooks():
    try:  # Airflow 3.2+: hooks are resolved by the task runtime's provider manager.
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
    except ImportError:
        from airflow.providers_manager import ProvidersManager

        return ProvidersManager().hooks
    return ProvidersManagerTaskRuntime().hooks


def test_providers_list_command_shows_the_package(airflow_db):
    airflow = Path(sys.executable).parent / "airflow"
    out = subprocess.run([str(airflow), "providers", "list"], capture_output=True, text=True, check=True).stdout
    assert "airflow-provider-kling" in out


def test_the_connection_form_labels_the_token_and_base_url_and_hides_the_rest():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    if hasattr(manager, "initialize_providers_hooks"):  # Airflow 2 reads the form from the hook's method
        manager.initialize_providers_hooks()
    form = manager.field_behaviours["kling"]
    assert form["relabeling"] == {"host": "API base URL", "password": "API token"}
    assert set(form["hidden_fields"]) == {"schema", "login", "port"}  # the extra holds the budgets
    assert '"budgets"' in form["placeholders"]["extra"]
    assert form["placeholders"]["host"].endswith("https://model-api.runcomfy.net")
