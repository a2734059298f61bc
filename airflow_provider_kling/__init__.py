"""Apache Airflow provider for Kling video generation through RunComfy's Model API."""

from __future__ import annotations

from typing import Any

from airflow_provider_kling.constants import CONNECTION_HIDDEN_FIELDS, CONNECTION_PLACEHOLDERS, CONNECTION_RELABELING

__version__ = "0.1.0"

__all__ = ["__version__", "get_provider_info"]

#: Set by :func:`standalone`: this process talks to RunComfy without Airflow.
STANDALONE = False


def standalone() -> None:
    """
    Talk to RunComfy without loading Airflow in this process (the ``kling`` command, when its token
    comes from the environment): the errors are then plain exceptions instead of Airflow's. Takes
    effect only before the provider's errors are first imported, and never once Airflow is loaded.
    """
    global STANDALONE
    STANDALONE = True


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow (``apache_airflow_provider`` entry point)."""
    return {**_provider_info(), **_ui_plugin()}


def _ui_plugin() -> dict[str, Any]:
    """The UI plugin (:mod:`airflow_provider_kling.ui`), on Airflow 3.1+ only: earlier ones have no plugin UI."""
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

    if not AIRFLOW_V_3_1_PLUS:
        return {}
    return {"plugins": [{"name": "kling", "plugin-class": "airflow_provider_kling.ui.plugin.KlingUIPlugin"}]}


def _provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-kling",
        "name": "Kling (RunComfy)",
        "description": "Generate videos with Kling through RunComfy's Model API, as deferrable Airflow tasks.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Kling (RunComfy)",
                "external-doc-url": "https://www.runcomfy.com/models/kling/kling-1-6/pro/text-to-video",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": "Kling (RunComfy)",
                "python-modules": [
                    "airflow_provider_kling.operators.kling",
                    "airflow_provider_kling.operators.image_to_video",
                    "airflow_provider_kling.operators.review",
                    "airflow_provider_kling.operators.stitch",
                    "airflow_provider_kling.operators.film_budget",
                ],
            }
        ],
        "sensors": [
            {"integration-name": "Kling (RunComfy)", "python-modules": ["airflow_provider_kling.sensors.kling"]}
        ],
        "hooks": [{"integration-name": "Kling (RunComfy)", "python-modules": ["airflow_provider_kling.hooks.kling"]}],
        "triggers": [
            {"integration-name": "Kling (RunComfy)", "python-modules": ["airflow_provider_kling.triggers.kling"]}
        ],
        "transfers": [
            {
                "source-integration-name": "Kling (RunComfy)",
                "target-integration-name": "Common IO",
                "python-module": "airflow_provider_kling.transfers.kling_to_storage",
            }
        ],
        "extra-links": ["airflow_provider_kling.links.kling.KlingVideoLink"],
        "task-decorators": [
            {"name": "kling", "class-name": "airflow_provider_kling.decorators.kling.kling_task"},
            {"name": "kling_stitch", "class-name": "airflow_provider_kling.decorators.stitch.kling_stitch_task"},
        ],
        "connection-types": [
            {
                "connection-type": "kling",
                "hook-class-name": "airflow_provider_kling.hooks.kling.KlingHook",
                "hook-name": "Kling (RunComfy)",
                "ui-field-behaviour": {
                    "hidden-fields": list(CONNECTION_HIDDEN_FIELDS),
                    "relabeling": dict(CONNECTION_RELABELING),
                    "placeholders": dict(CONNECTION_PLACEHOLDERS),
                },
            }
        ],
    }
