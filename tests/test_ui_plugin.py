"""The UI plugin as Airflow loads it: on 3.1+ its page, its tab and its routes; on Airflow 2 nothing."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

from airflow_provider_kling.ui.served import ByteRange, RangeNotSatisfiable, byte_range


def _loaded() -> object | None:
    """Our plugin, as this Airflow loaded it (the loader's functions changed names in 3.2)."""
    from airflow import plugins_manager

    if hasattr(plugins_manager, "_get_plugins"):
        plugins, errors = plugins_manager._get_plugins()
    else:
        plugins_manager.ensure_plugins_loaded()
        plugins, errors = plugins_manager.plugins or [], plugins_manager.import_errors
    assert not {name: error for name, error in errors.items() if "kling" in name.lower()}
    return next((plugin for plugin in plugins if plugin.name == "kling"), None)


def _fastapi_apps() -> list[dict]:
    from airflow import plugins_manager

    if hasattr(plugins_manager, "get_fastapi_plugins"):
        return list(plugins_manager.get_fastapi_plugins()[0])
    plugins_manager.initialize_fastapi_plugins()
    return list(plugins_manager.fastapi_apps or [])


@pytest.mark.skipif(not AIRFLOW_V_3_1_PLUS, reason="Airflow's plugin UI came in 3.1")
def test_airflow_loads_the_plugin_with_its_page_its_tab_and_its_routes():
    plugin = _loaded()
    assert plugin is not None, "Airflow did not load the kling plugin from its entry point"
    views = {view["url_route"]: view for view in plugin.external_views}
    assert views["kling"]["destination"] == "nav"
    assert views["kling-take"]["destination"] == "task_instance"
    assert "{DAG_ID}" in views["kling-take"]["href"]
    assert "{RUN_ID}" in views["kling-take"]["href"]
    assert "{TASK_ID}" in views["kling-take"]["href"]
    (ours,) = [app for app in _fastapi_apps() if app["url_prefix"] == "/kling"]
    paths = {route.path for route in ours["app"].routes}
    assert {"/ui/takes", "/ui/take", "/api/takes", "/api/takes/{dag_id}/{run_id}/{task_id}/{map_index}/video"} <= paths
    assert not {"/docs", "/openapi.json", "/redoc"} & paths  # nothing served without a user, not even docs


@pytest.mark.skipif(AIRFLOW_V_3_1_PLUS, reason="what Airflow before 3.1 gets")
def test_before_airflow_3_1_the_plugin_adds_nothing():
    import airflow_provider_kling

    plugin = _loaded()
    assert plugin is None or not (getattr(plugin, "external_views", []) or getattr(plugin, "fastapi_apps", []))
    assert "plugins" not in airflow_provider_kling.get_provider_info()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-", ByteRange(0, 999, 1000)),  # answered 206, as nginx does
        ("bytes=100-199", ByteRange(100, 199, 1000)),
        ("bytes=900-5000", ByteRange(900, 999, 1000)),
        ("bytes=-100", ByteRange(900, 999, 1000)),
        ("bytes=0-1, 5-6", None),  # several ranges: the whole file
        ("items=0-1", None),
    ],
)
def test_a_range_header_names_the_bytes_the_browser_gets(header, expected):
    assert byte_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-2"])
def test_a_range_outside_the_file_is_refused_with_its_size(header):
    with pytest.raises(RangeNotSatisfiable, match=r"bytes \*/1000"):
        byte_range(header, 1000)
