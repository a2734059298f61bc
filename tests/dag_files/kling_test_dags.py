"""DAGs the tests run with ``dag.test()``: the operator and the sensor in each waiting mode."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kling.operators.kling import KlingTextToVideoOperator
from airflow_provider_kling.records import RequestRecord, VariableRecord
from airflow_provider_kling.sensors.kling import KlingRequestSensor

FAST = {"retry_delay": 0.01, "max_attempts": 3, "read_timeout": 1.0}
PARAMS = {"prompt": "a paper boat on a rainy street", "duration": 5, "aspect_ratio": "16:9", "storage_conn_id": ""}
RETRY: dict[str, Any] = {"retries": 4, "retry_delay": timedelta(seconds=0)}


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, params=PARAMS)


class VariableRecordOperator(KlingTextToVideoOperator):
    """The operator as it runs on an Airflow without a task state store."""

    def _request_record(self, context: Any) -> RequestRecord:
        return VariableRecord(context["ti"])


def _generate(operator: type[KlingTextToVideoOperator] = KlingTextToVideoOperator, **kwargs: Any) -> Any:
    return operator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        duration="{{ params.duration }}",
        poll_interval=0.05,
        hook_params=FAST,
        **kwargs,
    )


with _dag("kling_operator_deferrable") as operator_deferrable:
    _generate(wait_for_completion=True, deferrable=True, include_cost=True)

with _dag("kling_operator_polling") as operator_polling:
    _generate(wait_for_completion=True, deferrable=False)

with _dag("kling_operator_submit_only") as operator_submit_only:
    _generate()

with _dag("kling_sensor_deferrable") as sensor_deferrable:
    KlingRequestSensor(
        task_id="wait",
        request_id=_generate().output,
        deferrable=True,
        poke_interval=0.05,
        hook_params=FAST,
    )

with _dag("kling_sensor_poke") as sensor_poke:
    KlingRequestSensor(
        task_id="wait",
        request_id=_generate().output,
        deferrable=False,
        mode="poke",
        poke_interval=0.05,
        hook_params=FAST,
    )

# Retried tries: the first ones fail after the submit (a deadline passes while the video renders,
# a poll keeps failing, the generation fails); later tries must resume, not pay again.
with _dag("kling_operator_retry_deferrable") as operator_retry_deferrable:
    _generate(wait_for_completion=True, deferrable=True, timeout=0.3, **RETRY)

with _dag("kling_operator_retry_polling") as operator_retry_polling:
    _generate(wait_for_completion=True, deferrable=False, **RETRY)

with _dag("kling_operator_retry_polling_deadline"):
    _generate(wait_for_completion=True, deferrable=False, timeout=0.5, **RETRY)

with _dag("kling_operator_retry_without_state_store") as operator_retry_without_state_store:
    _generate(VariableRecordOperator, wait_for_completion=True, deferrable=False, **RETRY)

with _dag("kling_operator_retry_no_resume") as operator_retry_no_resume:
    _generate(wait_for_completion=True, deferrable=False, resume=False, **RETRY)

for _mode in ("deferrable", "poke"):
    with _dag(f"kling_sensor_queue_limit_{_mode}"):
        KlingRequestSensor(
            task_id="wait",
            request_id=_generate().output,
            deferrable=_mode == "deferrable",
            poke_interval=0.05,
            queue_timeout=0.5,
            hook_params=FAST,
        )

with _dag("kling_copy_to_storage") as copy_to_storage:
    from airflow.providers.common.compat.sdk import Asset

    from airflow_provider_kling.transfers.kling_to_storage import KlingVideoToStorageOperator

    _copy_source = _generate(wait_for_completion=True, deferrable=True)
    KlingVideoToStorageOperator(
        task_id="copy",
        request_id=_copy_source.output,
        destination="{{ params.destination }}",
        hook_params=FAST,
        outlets=[Asset(uri="file:///kling-test-videos")],
    )

with _dag("kling_other_model") as other_model:
    KlingTextToVideoOperator(
        task_id="generate",
        model="kling/kling-1-6/pro/image-to-video",
        prompt="{{ params.prompt }}",
        input={"image_url": "{{ params.image_url }}", "duration": 5},
        wait_for_completion=True,
        deferrable=True,
        poll_interval=0.05,
        hook_params=FAST,
    )

with _dag("kling_taskflow") as taskflow:
    from airflow.providers.common.compat.sdk import task

    @task.kling(duration=5, poll_interval=0.05, hook_params=FAST)
    def teaser(product: str) -> str:
        return f"A slow pan across {product} on a marble table, soft morning light"

    @task.kling(poll_interval=0.05, hook_params=FAST)
    def vertical() -> dict[str, Any]:
        return {"prompt": "A lighthouse at dusk, waves below", "aspect_ratio": "9:16"}

    @task
    def publish(results: list[dict[str, Any]], single: dict[str, Any]) -> list[str]:
        return [result["video_url"] for result in [*results, single]]

    publish(teaser.expand(product=["a watch", "a fountain pen"]), vertical())

# One task generates and stores (``destination``): on a worker, or ended by the trigger itself.
for _layout, _how in {
    "stores_polling": {"deferrable": False},
    "stores_deferrable": {"deferrable": True},
    "ends_in_triggerer": {"deferrable": True, "finish_in_triggerer": True},
}.items():
    with _dag(f"kling_operator_{_layout}"):
        _generate(wait_for_completion=True, destination="{{ params.destination }}", include_cost=True, **_how)

with _dag("kling_taskflow_ends_in_triggerer") as taskflow_ends_in_triggerer:
    from airflow.providers.common.compat.sdk import task

    @task.kling(
        poll_interval=0.05,
        hook_params=FAST,
        destination="{{ params.destination }}",
        finish_in_triggerer=True,
    )
    def stored_teaser() -> str:
        return "A slow pan across a watch on a marble table"

    @task
    def where(result: dict[str, Any]) -> str:
        return str(result["stored"]["uri"])

    where(stored_teaser())

# The checked video, in every layout that stores: a try whose download is refused fails, and its
# retry fetches the video again (resuming the request: never paying again); "strict" refuses a
# video of another shape than asked, and is never retried.
CHECKED_LAYOUTS = {
    "polling": {"deferrable": False},
    "deferrable": {"deferrable": True},
    "ends_in_triggerer": {"deferrable": True, "finish_in_triggerer": True},
}
for _layout, _how in CHECKED_LAYOUTS.items():
    for _verify in ("warn", "strict"):
        with _dag(f"kling_checked_{_verify}_{_layout}"):
            _generate(
                wait_for_completion=True,
                destination="{{ params.destination }}",
                storage_conn_id="{{ params.storage_conn_id }}",
                aspect_ratio="{{ params.aspect_ratio }}",
                verify=_verify,
                retries=1,
                retry_delay=timedelta(seconds=0),
                **_how,
            )

with _dag("kling_checked_warn_taskflow") as checked_taskflow:
    from airflow.providers.common.compat.sdk import task

    @task.kling(
        poll_interval=0.05,
        hook_params=FAST,
        destination="{{ params.destination }}",
        storage_conn_id="{{ params.storage_conn_id }}",
        finish_in_triggerer=True,
        retries=1,
        retry_delay=timedelta(seconds=0),
    )
    def generate(**context: Any) -> dict[str, Any]:
        params = context["params"]
        return {"prompt": params["prompt"], "aspect_ratio": params["aspect_ratio"], "duration": params["duration"]}

    generate()
