"""Copy a generated Kling video to storage you own (local disk or any ObjectStoragePath)."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_kling.constants import DEFAULT_CONN_ID, MAX_VIDEO_BYTES
from airflow_provider_kling.exceptions import KlingInputError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_kling.hooks.kling import KlingHook


class KlingVideoToStorageOperator(BaseOperator):
    """
    Copy a Kling video to storage and return the destination URI.

    RunComfy does not promise how long output URLs live, so copy each video somewhere you own.
    The copy streams in chunks (constant memory) to a temporary name beside the destination and
    is moved into place once its size matches ``Content-Length`` and it is checked as a video: a
    web page, an image or a file FFmpeg cannot decode is refused (``KlingNotAVideoError``; a retry
    fetches it again). A reader never sees a partial file, and a failed copy leaves nothing
    behind. Pushes XComs ``size_bytes``, ``sha256``, ``content_type`` and ``stored`` (all of it
    and the video's facts: ``duration_s``, ``width``, ``height``, ``frame_rate``, ``video_codec``,
    ``has_audio``..., and ``poster``). With ``outlets=[Asset(...)]``, downstream DAGs can be
    scheduled on new videos; the asset event's extra carries the same.

    :param destination: where the video goes: a local path or an ``ObjectStoragePath`` URI
        (``file://``, ``s3://``, ``gs://``...). Templated.
    :param request_id: copy the video of this request (a fresh result is fetched, so the URL is
        current). Templated. Give this or ``video_url``.
    :param video_url: copy from this http(s) URL instead. Templated.
    :param storage_conn_id: the Airflow connection of the destination's object store. Templated.
    :param overwrite: replace an existing destination; refused by default.
    :param max_bytes: refuse a video larger than this (default 500 MB).
    :param poster: store a poster frame (``<name>.jpg``) beside the video.
    :param kling_conn_id: the ``kling`` connection, used to fetch the result of ``request_id``.
    :param hook_params: extra keyword arguments for the hook (timeouts, retries).
    """

    template_fields: Sequence[str] = ("destination", "request_id", "video_url", "storage_conn_id")
    ui_color = "#e4f0ff"

    def __init__(
        self,
        *,
        destination: str,
        request_id: str | None = None,
        video_url: str | None = None,
        storage_conn_id: str | None = None,
        overwrite: bool = False,
        max_bytes: int = MAX_VIDEO_BYTES,
        poster: bool = True,
        kling_conn_id: str = DEFAULT_CONN_ID,
        hook_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.destination = destination
        self.request_id = request_id
        self.video_url = video_url
        self.storage_conn_id = storage_conn_id
        self.overwrite = overwrite
        self.max_bytes = max_bytes
        self.poster = poster
        self.kling_conn_id = kling_conn_id
        self.hook_params = hook_params or {}
        #: What landed (``stored``) and the request it came from, for lineage.
        self._stored: dict[str, Any] | None = None
        self._request_id: str | None = None

    @cached_property
    def hook(self) -> KlingHook:
        from airflow_provider_kling.hooks.kling import KlingHook

        return KlingHook(self.kling_conn_id, **self.hook_params)

    def execute(self, context: Context) -> str:
        if bool(self.request_id) == bool(self.video_url):
            raise KlingInputError("Give exactly one of request_id or video_url (the video to copy)")
        if not str(self.destination or "").strip():
            raise KlingInputError(
                "destination: must be a path or a URI such as file:///videos/x.mp4 or s3://bucket/x.mp4"
            )
        from airflow_provider_kling.hooks.download import VideoRules
        from airflow_provider_kling.store import describe_asset_events, describe_facts

        finished_at = None
        request_id = str(self.request_id) if self.request_id else None
        if self.video_url:
            url = self.video_url
        else:
            result = self.hook.get_result(str(request_id)).require_video(str(request_id))
            url, finished_at = result["video_url"], result.get("finished_at")
        saved = self.hook.download_video(
            url,
            self.destination,
            max_bytes=self.max_bytes,
            overwrite=self.overwrite,
            storage_conn_id=self.storage_conn_id,
            rules=VideoRules(poster=self.poster, request_id=request_id),
        )
        stored = {**saved.stored(), "request_id": request_id}
        ti = context["ti"]
        ti.xcom_push(key="size_bytes", value=saved.size_bytes)
        ti.xcom_push(key="sha256", value=saved.sha256)
        ti.xcom_push(key="content_type", value=saved.content_type)
        ti.xcom_push(key="stored", value=stored)
        self.log.info(
            "Copied %d bytes (sha256 %s) to %s; %s", saved.size_bytes, saved.sha256, saved.uri, describe_facts(stored)
        )
        describe_asset_events(self, context, stored)
        from airflow_provider_kling.spend import Spend

        Spend.of_task(self.hook, self).stored(finished_at, stored)
        self._stored, self._request_id = stored, request_id
        return saved.uri

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the stored video as the output dataset (not the temporary file it was written to)."""
        from airflow_provider_kling.lineage import stored_video_lineage

        if self._stored is None:
            from airflow.providers.openlineage.extractors import OperatorLineage

            return OperatorLineage()
        return stored_video_lineage(self._stored, self._request_id)
