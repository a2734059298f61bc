"""Load DAG files in tests the same way on every supported Airflow version."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


def load_dags(path: str | Path) -> dict[str, Any]:
    """
    Parse a DAG file (or a folder of them) and return its DAGs by id.

    :param path: a DAG file or a folder of DAG files.
    :raises AssertionError: if any file fails to import; the message carries Airflow's errors.
    """
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3
    except ImportError:
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef,attr-defined,unused-ignore]  # Airflow 2

    bag = DagBag(dag_folder=str(path))
    assert not bag.import_errors, f"DAG import errors: {bag.import_errors}"
    _register_on_airflow_3_0(bag)
    return dict(bag.dags)


def _register_on_airflow_3_0(bag: Any) -> None:
    """
    Airflow 3.0's ``dag.test()`` runs a DAG it never wrote to the database, so its assets stay
    inactive and a task with an asset outlet fails before it starts; 3.1 writes the DAG first.
    Do what 3.1 does, on 3.0 only.
    """
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_1_PLUS

    if not AIRFLOW_V_3_0_PLUS or AIRFLOW_V_3_1_PLUS:
        return
    from airflow.dag_processing.bundles.manager import DagBundlesManager  # type: ignore[import-not-found,unused-ignore]

    DagBundlesManager().sync_bundles_to_db()
    bag.sync_to_db("dags-folder", None)
