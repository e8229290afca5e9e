"""Airbyte's and Fivetran's own payloads, posted to a real exporter, fire the shipped alerts in a real Prometheus.

The payloads are the vendors' (``tests/data/sources/``, sources in its README); only the job ids and
times differ between the two jobs of each connection.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import requests

from tests.support.exporter_process import ExporterProcess
from tests.support.paths import DATA, RULE_FILES
from tests.support.prometheus_server import Prometheus
from tests.support.waiting import wait_until

SECRET = "fivetran-webhook-secret-0123456789"


def airbyte_failure(job_id: int, hour: int) -> dict[str, Any]:
    """The documentation's failed sync (``data`` alone), as job ``job_id`` of that day's ``hour``."""
    body: dict[str, Any] = json.loads((DATA / "sources" / "airbyte" / "docs-failed-sync.json").read_bytes())
    body["data"] |= {
        "jobId": job_id,
        "startedAt": f"2024-01-01T{hour:02d}:00:00Z",
        "finishedAt": f"2024-01-01T{hour:02d}:30:00Z",
    }
    return body


def fivetran_failure(sync_id: str, hour: int) -> list[bytes]:
    """A sync's start and its FAILURE_WITH_TASK end, as Fivetran sends them."""
    end = json.loads((DATA / "sources" / "fivetran" / "sync-end-failure-with-task.json").read_bytes())
    end |= {"sync_id": sync_id, "created": f"2026-05-26T{hour:02d}:30:00.000Z"}
    end["data"]["reason"] = "Cannot connect to the source: password authentication failed"
    start = {key: value for key, value in end.items() if key != "data"} | {"event": "sync_start"}
    start["created"] = f"2026-05-26T{hour:02d}:00:00.000Z"
    return [json.dumps(start).encode(), json.dumps(end).encode()]


def test_an_airbyte_and_a_fivetran_connection_failing_twice_fire_the_failure_alert_and_page(
    exporter_process: Callable[..., ExporterProcess], prometheus_for: Callable[..., Prometheus]
) -> None:
    exporter = exporter_process(env={"CALABI_SOURCES__FIVETRAN__WEBHOOK_SECRET": SECRET})
    for job_id, hour in ((9987, 8), (9988, 9)):
        answer = requests.post(exporter.url + "/webhooks/airbyte", json=airbyte_failure(job_id, hour), timeout=30)
        assert answer.json() == {"kind": "sync_failed", "job_id": f"airbyte:{job_id}", "outcome": "accepted"}
    for sync_id, hour in (("sync-a", 8), ("sync-b", 9)):
        for body in fivetran_failure(sync_id, hour):
            signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            answer = requests.post(
                exporter.url + "/webhooks/fivetran",
                data=body,
                headers={"Content-Type": "application/json", "X-Fivetran-Signature-256": signature},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text

    prometheus = prometheus_for(f"127.0.0.1:{exporter.port}", rule_files=RULE_FILES)
    expected = {
        ("CalabiSyncJobFailed", "Connection"),
        ("CalabiSyncConsecutiveFailures", "Connection"),
        ("CalabiSyncJobFailed", "users_pg"),
        ("CalabiSyncConsecutiveFailures", "users_pg"),
    }
    wait_until(lambda: expected <= prometheus.firing(), timeout=60, what="both connections' alerts firing")

    failed = {
        s["metric"]["connection"]: s["metric"] for s in prometheus.query('ALERTS{alertname="CalabiSyncJobFailed"}')
    }
    assert (failed["Connection"]["job_id"], failed["Connection"]["error_summary"]) == (
        "airbyte:9988",
        "Something failed (type: config_error, origin: source)",
    )
    assert (failed["users_pg"]["job_id"], failed["users_pg"]["error_summary"]) == (
        "fivetran:sync-b",
        "Cannot connect to the source: password authentication failed",
    )
    platforms = {
        s["metric"]["connection"]: s["metric"]["platform"] for s in prometheus.query("calabi_sync_connection_info")
    }
    assert platforms == {"Connection": "airbyte", "users_pg": "fivetran"}
