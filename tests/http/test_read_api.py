"""The read API: jobs by filter and page, one job with its logs, connection health, and its 400/401/404 answers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from calabi_exporter.config import Config
from calabi_exporter.joblogs import LogLine
from calabi_exporter.model import parse_job
from calabi_exporter.store import Store
from calabi_exporter.timeutil import format_rfc3339
from calabi_exporter.web import create_app
from flask.testing import FlaskClient

from tests.support.clock import T0, FakeClock
from tests.support.paths import ROOT

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

SF = "Salesforce → Snowflake"
STRIPE = "Stripe → Postgres"
HUBSPOT = "HubSpot → BigQuery"
HOUR = 3600.0
DAY = 86400.0


def at(offset_hours: float) -> str:
    """A time relative to T0 (2026-04-06T08:00:00Z), as RFC 3339."""
    return format_rfc3339(T0 + offset_hours * HOUR)


DATA: list[dict[str, Any]] = [
    # Salesforce: two successes and a failure within the week, one older success.
    {"job_id": "sf-old", "connection_name": SF, "connection_id": "conn-sf", "status": "succeeded",
     "started_at": at(-10 * 24), "finished_at": at(-10 * 24 + 1)},
    {"job_id": "sf-1", "connection_name": SF, "connection_id": "conn-sf", "status": "succeeded",
     "started_at": at(-48), "finished_at": at(-48 + 0.5), "records_synced": 4218, "job_type": "sync"},
    {"job_id": "sf-2", "connection_name": SF, "connection_id": "conn-sf", "status": "succeeded",
     "started_at": at(-24 - 2), "finished_at": at(-24 - 2 + 0.25), "job_type": "sync"},
    {"job_id": "sf-3", "connection_name": SF, "connection_id": "conn-sf", "status": "failed",
     "started_at": at(-3), "failed_at": at(-3 + 0.1), "error_summary": "Stream Account: 401 Unauthorized",
     "job_url": "https://app.calabi.io/connect/jobs/sf-3", "job_type": "reset"},
    # Stripe: failing for five days, never succeeded since.
    {"job_id": "st-1", "connection_name": STRIPE, "status": "succeeded",
     "started_at": at(-5 * 24 - 1), "finished_at": at(-5 * 24)},
    {"job_id": "st-2", "connection_name": STRIPE, "status": "failed",
     "started_at": at(-20), "failed_at": at(-20 + 0.2), "error_summary": "429 Too Many Requests"},
    {"job_id": "st-3", "connection_name": STRIPE, "status": "running", "started_at": at(-0.5)},
    # HubSpot: pending now.
    {"job_id": "hs-1", "connection_name": HUBSPOT, "status": "pending", "created_at": at(-0.2)},
]  # fmt: skip


@pytest.fixture
def setup(tmp_path: Path, make_store: Callable[..., Store]) -> tuple[Store, FlaskClient, FakeClock]:
    clock = FakeClock(T0 - 30 * DAY)  # the connections were first seen a month ago
    store = make_store(tmp_path / "data", clock=clock)
    store.ingest.jobs([parse_job(r) for r in DATA[:1]], endpoint="jobs")
    store.ingest.jobs([parse_job({"job_id": "st-0", "connection_name": STRIPE, "status": "running"})], endpoint="jobs")
    store.ingest.jobs([parse_job({"job_id": "hs-0", "connection_name": HUBSPOT, "status": "running"})], endpoint="jobs")
    clock.now = T0
    store.ingest.jobs([parse_job(r) for r in DATA[1:]], endpoint="jobs")
    client = create_app(Config(data_dir=str(tmp_path / "data")), store=store, clock=clock).test_client()
    return store, client, clock


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [job["job_id"] for job in response.get_json()["jobs"]]


def test_jobs_are_listed_newest_first_with_their_summary(setup: tuple[Store, FlaskClient, FakeClock]) -> None:
    _, client, _ = setup

    body = client.get("/api/v1/jobs").get_json()

    assert [j["job_id"] for j in body["jobs"]] == [
        "hs-1", "st-3", "sf-3", "st-2", "sf-2", "sf-1", "st-1", "sf-old", "st-0", "hs-0",
    ]  # fmt: skip
    assert body["next_cursor"] is None
    failed = next(j for j in body["jobs"] if j["job_id"] == "sf-3")
    assert failed == {
        "job_id": "sf-3",
        "connection_name": SF,
        "connection_id": "conn-sf",
        "source": None,
        "destination": None,
        "platform": "calabi",
        "job_type": "reset",
        "attempt": None,
        "status": "failed",
        "created_at": None,
        "started_at": "2026-04-06T05:00:00Z",
        "finished_at": "2026-04-06T05:06:00Z",
        "records_synced": None,
        "records_failed": None,
        "bytes_synced": None,
        "duration_seconds": 360.0,
        "streams_succeeded": None,
        "streams_failed": None,
        "error_summary": "Stream Account: 401 Unauthorized",
        "job_url": "https://app.calabi.io/connect/jobs/sf-3",
        "failed_at": "2026-04-06T05:06:00Z",
        "job_time": "2026-04-06T05:00:00Z",
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=failed", ["sf-3", "st-2"]),
        ("status=failed&since=24h", ["sf-3", "st-2"]),
        ("status=failed&since=4h", ["sf-3"]),
        ("status=failed,running&since=1d", ["st-3", "sf-3", "st-2"]),
        ("status=failed&status=pending", ["hs-1", "sf-3", "st-2"]),
        (f"connection={quote(SF)}&since=7d", ["sf-3", "sf-2", "sf-1"]),
        ("connection=conn-sf&until=2026-04-05T00:00:00Z", ["sf-1", "sf-old"]),
        ("connection=stripe", ["st-3", "st-2", "st-1", "st-0"]),
        (f"connection=conn-sf&connection={quote(HUBSPOT)}&status=pending", ["hs-1"]),
        ("job_type=reset", ["sf-3"]),
        ("since=2026-04-04T00:00:00Z&until=2026-04-05T12:00:00Z", ["sf-2", "sf-1"]),
        ("connection=no-such-connection", []),
    ],
)
def test_every_filter_selects_exactly_its_jobs(
    setup: tuple[Store, FlaskClient, FakeClock], query: str, expected: list[str]
) -> None:
    _, client, _ = setup

    assert ids(client.get(f"/api/v1/jobs?{query}")) == expected


def test_relative_times_follow_the_clock(setup: tuple[Store, FlaskClient, FakeClock]) -> None:
    _, client, clock = setup
    before = ids(client.get("/api/v1/jobs?status=failed&since=24h"))

    clock.advance(5 * HOUR)
    after = ids(client.get("/api/v1/jobs?status=failed&since=24h"))

    assert (before, after) == (["sf-3", "st-2"], ["sf-3"])


def test_pages_skip_and_repeat_nothing_while_new_jobs_arrive(setup: tuple[Store, FlaskClient, FakeClock]) -> None:
    store, client, clock = setup
    existing = ids(client.get("/api/v1/jobs?limit=500"))
    seen: list[str] = []
    url = "/api/v1/jobs?limit=3"
    pages = 0
    while url and pages < 20:
        body = client.get(url).get_json()
        seen += [job["job_id"] for job in body["jobs"]]
        pages += 1
        # New jobs arrive between pages: newer than everything listed, and one as old as st-2.
        clock.advance(60)
        store.ingest.jobs(
            [
                parse_job({"job_id": f"new-{pages}", "connection_name": SF, "status": "running"}),
                parse_job(
                    {"job_id": f"tie-{pages}", "connection_name": STRIPE, "status": "pending", "created_at": at(-20)}
                ),
            ],
            endpoint="jobs",
        )
        url = f"/api/v1/jobs?limit=3&cursor={body['next_cursor']}" if body["next_cursor"] else ""

    assert pages == 4
    assert len(seen) == len(set(seen))
    assert [s for s in seen if s in existing] == existing
    # Only tie-1 was created while its place (just before st-2) was still ahead of the cursor.
    assert [s for s in seen if s not in existing] == ["tie-1"]


def test_one_job_comes_with_its_streams_and_a_page_of_filtered_log_lines(
    setup: tuple[Store, FlaskClient, FakeClock],
) -> None:
    store, client, _ = setup
    store.ingest.jobs(
        [
            parse_job(
                {
                    "job_id": "sf-3",
                    "connection_name": SF,
                    "status": "failed",
                    "streams": [{"name": "Account", "status": "failed", "error": "401 Unauthorized"}],
                }
            )
        ],
        endpoint="jobs",
    )
    store.ingest.logs(
        "sf-3",
        [
            LogLine("INFO", "Syncing stream: Account", T0 - 3 * HOUR + 1, "Account"),
            LogLine("INFO", "Syncing stream: Contact", T0 - 3 * HOUR + 2, "Contact"),
            LogLine("WARN", "Salesforce API rate limit at 85% — throttling requests", T0 - 3 * HOUR + 3),
            LogLine("ERROR", "Stream Account: 401 Unauthorized — token expired", T0 - 3 * HOUR + 4, "Account"),
            LogLine("ERROR", "Échec de l'écriture: colonne inconnue", T0 - 3 * HOUR + 5),
        ],
    )

    whole = client.get("/api/v1/jobs/sf-3").get_json()
    first = client.get("/api/v1/jobs/sf-3?limit=2").get_json()["logs"]
    second = client.get(f"/api/v1/jobs/sf-3?limit=2&cursor={first['next_cursor']}").get_json()["logs"]
    third = client.get(f"/api/v1/jobs/sf-3?limit=2&cursor={second['next_cursor']}").get_json()["logs"]

    def messages(query: str) -> list[str]:
        return [line["message"] for line in client.get(f"/api/v1/jobs/sf-3?{query}").get_json()["logs"]["lines"]]

    assert whole["streams"] == [
        {
            "name": "Account",
            "status": "failed",
            "records_synced": None,
            "records_failed": None,
            "bytes_synced": None,
            "duration_seconds": None,
            "error": "401 Unauthorized",
        }
    ]
    assert whole["logs"]["lines"][3] == {
        "id": whole["logs"]["lines"][3]["id"],
        "timestamp": "2026-04-06T05:00:04Z",
        "received_at": "2026-04-06T08:00:00Z",
        "level": "ERROR",
        "stream": "Account",
        "message": "Stream Account: 401 Unauthorized — token expired",
    }
    assert [len(first["lines"]), len(second["lines"]), len(third["lines"])] == [2, 2, 1]
    assert third["next_cursor"] is None
    assert [line["message"] for line in first["lines"] + second["lines"] + third["lines"]] == [
        line["message"] for line in whole["logs"]["lines"]
    ]
    assert messages("level=error") == [
        "Stream Account: 401 Unauthorized — token expired",
        "Échec de l'écriture: colonne inconnue",
    ]
    assert messages("level=WARN&level=error&search=RATE") == ["Salesforce API rate limit at 85% — throttling requests"]
    assert messages("search=error") == messages("level=ERROR")  # like searching the log viewer for ERROR
    assert messages("search=account") == ["Syncing stream: Account", "Stream Account: 401 Unauthorized — token expired"]
    assert messages("search=ÉCHEC") == ["Échec de l'écriture: colonne inconnue"]


def test_connections_show_their_health_and_their_window(setup: tuple[Store, FlaskClient, FakeClock]) -> None:
    _, client, _ = setup

    body = client.get("/api/v1/connections").get_json()

    by_name = {c["connection_name"]: c for c in body["connections"]}
    assert list(by_name) == [HUBSPOT, SF, STRIPE]
    assert by_name[SF] == {
        "connection_name": SF,
        "connection_id": "conn-sf",
        "source": None,
        "destination": None,
        "platform": "calabi",
        "first_seen": "2026-03-07T08:00:00Z",
        "latest_job": {
            "job_id": "sf-3",
            "status": "failed",
            "finished_at": "2026-04-06T05:06:00Z",
            "error_summary": "Stream Account: 401 Unauthorized",
            "job_url": "https://app.calabi.io/connect/jobs/sf-3",
        },
        "last_status": "failed",
        "last_success_at": "2026-04-05T06:15:00Z",
        "last_failure_at": "2026-04-06T05:06:00Z",
        "seconds_since_success": 92700.0,
        "consecutive_failures": 1,
        "window": "7d",
        "jobs": {"succeeded": 2, "failed": 1, "cancelled": 0},
        "success_ratio": 2 / 3,
        "avg_duration_seconds": (1800 + 900 + 360) / 3,
    }
    assert by_name[HUBSPOT]["latest_job"] is None and by_name[HUBSPOT]["success_ratio"] is None
    month = client.get(f"/api/v1/connections?connection={quote(SF)}&window=30d").get_json()["connections"][0]
    assert (month["jobs"], month["avg_duration_seconds"]) == (
        {"succeeded": 3, "failed": 1, "cancelled": 0},
        (3600 + 1800 + 900 + 360) / 4,
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("stale_for=3d", [HUBSPOT, STRIPE]),  # Stripe's last success 5 days ago; HubSpot never, seen 30 days ago
        ("stale_for=6d", [HUBSPOT]),
        ("stale_for=31d", []),
        ("last_status=failed", [SF, STRIPE]),
        ("last_status=succeeded", []),
        ("stale_for=3d&last_status=failed", [STRIPE]),
        ("connection=conn-sf", [SF]),
        ("connection=HUB", [HUBSPOT]),
    ],
)
def test_connection_filters(setup: tuple[Store, FlaskClient, FakeClock], query: str, expected: list[str]) -> None:
    _, client, _ = setup

    body = client.get(f"/api/v1/connections?{query}").get_json()

    assert [c["connection_name"] for c in body["connections"]] == expected


@pytest.mark.parametrize(
    ("url", "field", "message"),
    [
        ("/api/v1/jobs?status=exploded", "status", "must be one of pending, running, succeeded, failed, cancelled"),
        ("/api/v1/jobs?since=yesterday", "since", "must be RFC 3339 (2026-04-06T08:00:00Z) or an age like 24h or 7d"),
        ("/api/v1/jobs?until=0d", "until", "must be RFC 3339 (2026-04-06T08:00:00Z) or an age like 24h or 7d"),
        ("/api/v1/jobs?since=1h&until=2h", "until", "must be after since"),
        ("/api/v1/jobs?limit=0", "limit", "must be an integer from 1 to 500 (got '0')"),
        ("/api/v1/jobs?limit=501", "limit", "must be an integer from 1 to 500 (got '501')"),
        ("/api/v1/jobs?limit=1&limit=2", "limit", "may be given once"),
        ("/api/v1/jobs?cursor=not-a-cursor", "cursor", "is not a cursor this API returned"),
        ("/api/v1/jobs?job_type=full", "job_type", "must be one of sync, reset (got 'full')"),
        ("/api/v1/jobs?connection=", "connection", "must not be empty"),
        ("/api/v1/jobs?state=failed", "state", "unknown parameter; use connection, status, since, until, job_type"),
        ("/api/v1/jobs/sf-3?level=LOUD", "level", "must be one of DEBUG, INFO, WARN, ERROR (got 'LOUD')"),
        ("/api/v1/jobs/sf-3?limit=5001", "limit", "must be an integer from 1 to 5000 (got '5001')"),
        ("/api/v1/jobs/sf-3?cursor=WyJ4Il0", "cursor", "is not a cursor this API returned"),
        ("/api/v1/connections?window=7x", "window", "must be a duration like 30m, 24h, 7d or 2w (got '7x')"),
        ("/api/v1/connections?window=400d", "window", "must be at most 366d"),
        ("/api/v1/connections?stale_for=soon", "stale_for", "must be a duration like 30m, 24h, 7d or 2w"),
        ("/api/v1/connections?stale_for=" + "9" * 5000 + "d", "stale_for", "must be a duration like 30m, 24h, 7d"),
        ("/api/v1/connections?window=" + "9" * 400 + "d", "window", "must be a duration like 30m, 24h, 7d or 2w"),
        ("/api/v1/jobs?since=" + "9" * 400 + "d", "since", "must be RFC 3339 (2026-04-06T08:00:00Z) or an age"),
        ("/api/v1/connections?last_status=running", "last_status", "must be one of succeeded, failed, cancelled"),
    ],
)
def test_bad_parameters_get_400_naming_the_parameter(
    setup: tuple[Store, FlaskClient, FakeClock], url: str, field: str, message: str
) -> None:
    _, client, _ = setup

    response = client.get(url)

    assert response.status_code == 400
    assert response.get_json()["field"] == field
    assert response.get_json()["error"].startswith(message)


def test_an_unknown_job_is_404(setup: tuple[Store, FlaskClient, FakeClock]) -> None:
    _, client, _ = setup

    response = client.get("/api/v1/jobs/no-such-job")

    assert (response.status_code, response.get_json()) == (404, {"error": "no job 'no-such-job'", "field": "job_id"})


def test_reads_take_a_read_or_an_ingest_token_and_a_read_token_cannot_write(
    tmp_path: Path, make_store: Callable[..., Store]
) -> None:
    read, ingest = "r" * 20, "i" * 20
    config = Config(data_dir=str(tmp_path / "data"), read_tokens=(read,), ingest_tokens=(ingest,))
    client = create_app(config, store=make_store(config.data_path)).test_client()

    def status(method: str, path: str, token: str | None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = {"job_id": "a", "connection_name": SF, "status": "running"} if method == "POST" else None
        return client.open(path, method=method, headers=headers, json=body).status_code

    assert [
        status("GET", "/api/v1/jobs", None),
        status("GET", "/api/v1/jobs", read),
        status("GET", "/api/v1/connections", ingest),
        status("POST", "/api/v1/jobs", read),
        status("POST", "/api/v1/jobs", ingest),
        status("GET", "/api/v1/jobs/a", read),
        status("GET", "/api/v1/openapi.json", None),
    ] == [401, 200, 200, 401, 200, 200, 200]


def test_a_connection_name_with_a_comma_is_one_name(setup: tuple[Store, FlaskClient, FakeClock]) -> None:
    store, client, _ = setup
    name = "Postgres, EU → Snowflake"
    store.ingest.jobs([parse_job({"job_id": "eu-1", "connection_name": name, "status": "running"})], endpoint="jobs")

    jobs = ids(client.get(f"/api/v1/jobs?connection={quote(name)}"))
    connections = client.get(f"/api/v1/connections?connection={quote(name)}").get_json()["connections"]

    assert jobs == ["eu-1"]
    assert [c["connection_name"] for c in connections] == [name]


def test_the_documented_window_pattern_takes_exactly_the_windows_the_api_takes(
    setup: tuple[Store, FlaskClient, FakeClock],
) -> None:
    _, client, _ = setup
    document = json.loads((ROOT / "exporter" / "openapi.json").read_text(encoding="utf-8"))
    parameter = next(p for p in document["paths"]["/api/v1/connections"]["get"]["parameters"] if p["name"] == "window")
    pattern = re.compile(parameter["schema"]["pattern"])
    limits = {"s": 366 * 86400, "m": 366 * 1440, "h": 366 * 24, "d": 366, "w": 52}
    windows = [f"{n}{unit}" for unit, limit in limits.items() for n in (0, 1, limit - 1, limit, limit + 1, limit * 10)]

    documented = {w for w in windows if pattern.fullmatch(w)}
    served = {w for w in windows if client.get(f"/api/v1/connections?window={w}").status_code == 200}

    assert documented == served
    assert "366d" in served and "367d" not in served and "52w" in served and "53w" not in served
