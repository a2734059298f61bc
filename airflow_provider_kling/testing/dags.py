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
    return dict(bag.dags)
