"""A history of finished jobs and their logs, uploaded as the product uploads it.

Shared by the Loki tests and the log-shipping benchmark.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import requests
from calabi_exporter.timeutil import format_rfc3339
from flask.testing import FlaskClient

DAY = 86_400.0
CONNECTIONS = (
    "Salesforce → Snowflake",
    "HubSpot → BigQuery",
    "Stripe → Postgres",
    "Zendesk → Redshift",
    "Shopify → Snowflake",
    "Jira → Databricks",
)


@dataclass(frozen=True)
class HistoryJob:
    """A finished job of the history and its log lines (true time, text)."""

    record: dict[str, object]
    lines: tuple[tuple[float, str], ...]
    levels: tuple[str, ...] = ()  # per line; INFO when empty

    @property
    def job_id(self) -> str:
        return str(self.record["job_id"])

    def text(self) -> str:
        levels = self.levels or ("INFO",) * len(self.lines)
        return "".join(
            f"{format_rfc3339(at)} {level} {text}\n" for (at, text), level in zip(self.lines, levels, strict=True)
        )


def history(
    now: float, *, days: float = 7, connections: tuple[str, ...] = CONNECTIONS, per_connection: int = 40, seed: int = 1
) -> list[HistoryJob]:
    """``per_connection`` finished jobs per connection spread over ``days`` before ``now``.

    Lines are 20 to 200 per job at whole milliseconds; every fifth job runs three hours,
    longer than Loki's one-hour out-of-order window.
    """
    rng = random.Random(seed)
    jobs = []
    span = days * DAY - 6 * 3600  # the first job starts two hours inside ``days``, the last ends before now
    for c, connection in enumerate(connections):
        for n in range(per_connection):
            started = round(now - days * DAY + 7200 + span * n / per_connection + rng.uniform(0, 600), 3)
            duration = 3 * 3600.0 if n % 5 == 2 else round(rng.uniform(60, 1800), 3)
            count = rng.randint(20, 200)
            job_id = f"job-{c}-{n:03d}"
            lines = tuple(
                (round(started + duration * i / count, 3), f"Stream s{i % 7}: line {i} of {job_id}")
                for i in range(count)
            )
            record = {
                "job_id": job_id,
                "connection_name": connection,
                "status": "failed" if n % 9 == 4 else "succeeded",
                "started_at": format_rfc3339(started),
                "finished_at": format_rfc3339(started + duration),
                "records_synced": count * 10,
                "records_failed": 0,
            }
            jobs.append(HistoryJob(record, lines))
    return jobs


def post_records_then_logs(client: FlaskClient | requests.Session, base: str, jobs: list[HistoryJob]) -> None:
    """As the product uploads history: every job record first, then each job's log, shuffled across connections."""
    order = list(jobs)
    random.Random(2).shuffle(order)
    for start in range(0, len(order), 100):
        batch = {"jobs": [j.record for j in order[start : start + 100]]}
        response = client.post(base + "/api/v1/jobs", json=batch)
        assert response.status_code == 200
    random.Random(3).shuffle(order)
    for job in order:
        path = f"{base}/api/v1/jobs/{job.job_id}/logs"
        if isinstance(client, requests.Session):
            response = client.post(path, data=job.text().encode(), headers={"Content-Type": "text/plain"}, timeout=30)
        else:
            response = client.post(path, data=job.text(), content_type="text/plain")
        assert response.status_code == 200


def big_job(job_id: str, connection: str, now: float, *, count: int = 1000, size: int = 5000) -> HistoryJob:
    """A job of the last few minutes with ``count`` lines of ``size`` bytes (1,000 × 5 KB: about 5 MB of OTLP)."""
    start = now - 600
    lines = tuple((round(start + i * 0.25, 3), f"line {i} of {job_id} " + "x" * size) for i in range(count))
    record = {
        "job_id": job_id,
        "connection_name": connection,
        "status": "succeeded",
        "started_at": format_rfc3339(start),
        "finished_at": format_rfc3339(lines[-1][0] + 1),
    }
    return HistoryJob(record, lines)
