"""
Lineage in a real DAG run: Airflow's OpenLineage provider, its file transport, the events read back
and checked against JSON schemas (ours for the facet, and the RunEvent fields the spec requires).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import AIRFLOW, TOKEN, lineage_env

pytest.importorskip("airflow.providers.openlineage", reason="Airflow's OpenLineage provider (the dev group has it)")
jsonschema = pytest.importorskip("jsonschema")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DAGS = Path(__file__).parent / "dag_files"
FACETS = Path(__file__).parent.parent / "airflow_provider_kling" / "facets"
FACET_SCHEMA = FACETS / "KlingGenerationRunFacet.json"
VIDEO_FACET_SCHEMA = FACETS / "KlingVideoDatasetFacet.json"
PROMPT = "a lighthouse keeper's secret recipe [sim:queue=0.2][sim:run=0.3]"
#: The RunEvent fields the OpenLineage 2-0-2 spec requires, written from its documentation: a check
#: of the envelope our facets and datasets travel in (the spec's own schema file is not on this machine).
RUN_EVENT = {
    "type": "object",
    "required": ["eventTime", "producer", "schemaURL", "eventType", "run", "job"],
    "properties": {
        "eventTime": {"type": "string", "format": "date-time"},
        "producer": {"type": "string", "format": "uri"},
        "schemaURL": {"type": "string", "format": "uri"},
        "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
        "run": {
            "type": "object",
            "required": ["runId"],
            "properties": {"runId": {"type": "string", "format": "uuid"}, "facets": {"type": "object"}},
        },
        "job": {"type": "object", "required": ["namespace", "name"]},
        "outputs": {
            "type": "array",
            "items": {"type": "object", "required": ["namespace", "name"]},
        },
    },
}


def test_the_generation_and_the_stored_video_are_described_without_the_token_or_the_prompt(sim, tmp_path, airflow_db):
    events_file = tmp_path / "openlineage.jsonl"
    destination = tmp_path / "videos" / "lighthouse.mp4"
    env = lineage_env(events_file, sim, DAGS, KLING_LINEAGE_DESTINATION=str(destination))
    done = subprocess.run(
        [AIRFLOW, "dags", "test", "kling_lineage"], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert destination.exists()
    text = events_file.read_text()
    assert TOKEN not in text
    assert "secret recipe" not in text  # the prompt only as a hash: lineage_prompt is off
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    for event in events:
        jsonschema.validate(event, RUN_EVENT, format_checker=jsonschema.FormatChecker())

    def complete(task_id: str) -> dict:
        return next(
            e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"].endswith(f"kling_lineage.{task_id}")
        )

    facet = complete("generate")["run"]["facets"]["kling_generation"]
    jsonschema.validate(facet, json.loads(FACET_SCHEMA.read_text()), format_checker=jsonschema.FormatChecker())
    (request_id,) = sim.requests
    assert facet["requestId"] == request_id
    assert facet["model"] == "kling/kling-1-6/pro/text-to-video"
    assert facet["promptSha256"] == hashlib.sha256(PROMPT.encode()).hexdigest()
    assert facet["videoSeconds"] == 10
    assert facet["cost"] == 1.0  # what the simulator reports for 10 s

    outputs = complete("store")["outputs"]
    assert [(o["namespace"], o["name"]) for o in outputs] == [("file", str(destination))]  # the video, not a .part
    assert ".part" not in json.dumps(complete("store"))
    # Whichever task stored a video, its dataset names the request that paid for it, and what it is.
    generated = complete("generate")["outputs"]
    assert [(o["namespace"], o["name"]) for o in generated] == [("file", str(destination.with_name("generated.mp4")))]
    video_schema = json.loads(VIDEO_FACET_SCHEMA.read_text())
    for output in (*outputs, *generated):
        video = output["facets"]["kling_video"]
        jsonschema.validate(video, video_schema, format_checker=jsonschema.FormatChecker())
        assert video["requestId"] == request_id
        assert video["durationSeconds"] == pytest.approx(10, abs=0.1)
        assert (video["width"], video["height"], video["hasAudio"]) == (320, 180, False)  # Kling 1.6 is silent
        assert video["poster"].endswith(".jpg")
        assert video["lastFrame"].endswith(".last.png")
        assert video["mismatch"] == []
