"""The Airbyte and Fivetran pollers against the vendors' APIs as their OpenAPI documents describe them.

Each poller talks to Prism (``prism proxy --errors``, :mod:`tests.support.prism`) serving the
vendor's own document: Airbyte's public API (airbytehq/airbyte-platform
``airbyte-api/server-api/src/main/openapi/api.yaml`` at 310e6cb6) and Fivetran's REST API
(``fivetran-open-api-definition.json`` as published in fivetran/fivetran-mcp at 30c91536), each
cut to the operations the poller calls (``tests/data/sources/openapi/cut.py``). Prism refuses a
request the document does not allow and turns an answer that breaks it into a 500, so these
tests pass only when the poller asks what the vendor documents and reads what the vendor sends.
Behind Prism, a scripted API holds the jobs and connections and injects the failures.

The Fivetran connections follow go-fivetran's fixture of ``GET /v1/connections``
(fivetran/go-fivetran ``connections/connections_list_test.go`` at 74cb73c7), with ids, names and
times of the test's own.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from calabi_exporter.airbyte_poller import AirbytePoller
from calabi_exporter.config import Config
from calabi_exporter.fivetran_poller import FivetranPoller
from calabi_exporter.model import CANCELLED, FAILED, RUNNING, SUCCEEDED, Job
from calabi_exporter.sources import ConnectionState, airbyte
from calabi_exporter.sources.airbyte_api import with_seconds
from calabi_exporter.store import Store
from calabi_exporter.store.records import JobFilter, SeriesLimits
from calabi_exporter.timeutil import format_rfc3339, parse_rfc3339

from tests.support.clock import T0, FakeClock
from tests.support.paths import DATA, ROOT
from tests.support.prism import AIRBYTE_CONFIG_DOCUMENT, AIRBYTE_DOCUMENT, FIVETRAN_DOCUMENT, prism_proxy
from tests.support.vendor_api import Answer, Asked, ScriptedApi
from tests.support.waiting import wait_until

GO_FIVETRAN_FIXTURE = ROOT / "tests" / "data" / "sources" / "fivetran" / "go-fivetran-connections-list.json"
CLIENT = ("0da998a2-0d7b-49c7-bb6e-9f7eb9cc68a0", "airbyte-client-secret-for-tests")


def airbyte_time(moment: float) -> str:
    """A time as Airbyte's public API writes it (``OffsetDateTime.toString()``: zero seconds left out)."""
    text = format_rfc3339(moment)
    return text.replace(":00Z", "Z") if text.endswith(":00Z") else text


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[ScriptedApi, str]]]:
    """Each vendor's scripted API and the URL of Prism in front of it (one of each for the module)."""
    logs = tmp_path_factory.mktemp("prism")
    airbyte_api, fivetran_api = ScriptedApi().start(), ScriptedApi().start()
    try:
        with (
            prism_proxy(AIRBYTE_DOCUMENT, airbyte_api.url, logs / "airbyte.log") as airbyte_url,
            prism_proxy(AIRBYTE_CONFIG_DOCUMENT, airbyte_api.url, logs / "airbyte-config.log") as config_url,
            prism_proxy(FIVETRAN_DOCUMENT, fivetran_api.url, logs / "fivetran.log") as fivetran_url,
        ):
            yield {
                "airbyte": (airbyte_api, airbyte_url),
                "airbyte-config": (airbyte_api, config_url),
                "fivetran": (fivetran_api, fivetran_url),
            }
    finally:
        airbyte_api.stop()
        fivetran_api.stop()


@pytest.fixture
def airbyte_api(vendor: dict[str, tuple[ScriptedApi, str]]) -> Iterator[ScriptedApi]:
    api = vendor["airbyte"][0]
    api.reset()
    yield api
    api.reset()


@pytest.fixture
def fivetran_api(vendor: dict[str, tuple[ScriptedApi, str]]) -> Iterator[ScriptedApi]:
    api = vendor["fivetran"][0]
    api.reset()
    yield api
    api.reset()


# ------------------------------------------------------------------------------------------- Airbyte


class AirbyteWorkspace:
    """Jobs and connections of an Airbyte workspace, answered as the public API does."""

    def __init__(self, api: ScriptedApi) -> None:
        self.api = api
        self.jobs: list[dict[str, Any]] = []
        self.names: dict[str, str] = {}
        self.tokens: list[str] = []
        self.valid: set[str] = set()
        api.routes[("POST", "/applications/token")] = self.token
        api.routes[("GET", "/jobs")] = self.list_jobs
        api.routes[("POST", "/v1/jobs/get_without_logs")] = self.job_info
        self.infos: dict[int, Any] = {}  # job id -> the configuration API's JobInfoRead

    def token(self, asked: Asked) -> Answer:
        body = json.loads(asked.body)
        if (body.get("client_id"), body.get("client_secret")) != CLIENT:
            return Answer(403, {"message": "Invalid client credentials"})
        token = f"token-{len(self.tokens) + 1}"
        self.tokens.append(token)
        self.valid.add(token)
        return Answer(200, {"access_token": token, "token_type": "Bearer", "expires_in": 180})

    def authorized(self, asked: Asked) -> bool:
        return asked.headers.get("authorization", "").removeprefix("Bearer ") in self.valid

    def connection(self, name: str) -> str:
        ident = str(uuid.uuid5(uuid.NAMESPACE_URL, name))
        self.names[ident] = name
        self.api.routes[("GET", f"/connections/{ident}")] = lambda asked: self.answer_connection(asked, ident)
        return ident

    def answer_connection(self, asked: Asked, ident: str) -> Answer:
        if not self.authorized(asked):
            return Answer(401, {"message": "Unauthorized"})
        workspace = "18dccc91-0ab1-4f72-9ed7-0b8fc27c5826"
        return Answer(
            200,
            {
                "connectionId": ident,
                "name": self.names[ident],
                "sourceId": "9924bcd0-99be-453d-ba47-c2c9766f7da5",
                "destinationId": "744cc0ed-7f05-4949-9e60-2a814f90c035",
                "workspaceId": workspace,
                "status": "active",
                "schedule": {"scheduleType": "basic", "basicTiming": "Every 1 hours"},
                "configurations": {"streams": []},
                "createdAt": 1_700_000_000,
                "tags": [],
            },
        )

    def add(self, job_id: int, connection_id: str, *, status: str = "succeeded", ended: float, **more: Any) -> None:
        job = {
            "jobId": job_id,
            "status": status,
            "jobType": "sync",
            "startTime": airbyte_time(ended - 310),
            "connectionId": connection_id,
        }
        if status in ("succeeded", "failed", "cancelled"):
            job |= {"lastUpdatedAt": airbyte_time(ended), "duration": "PT5M10S"}
        self.jobs.append(job | {"bytesSynced": 1000 * job_id, "rowsSynced": 10 * job_id} | more)

    def job_info(self, asked: Asked) -> Answer:
        if not self.authorized(asked):
            return Answer(401, {"message": "Unauthorized"})
        info = self.infos.get(json.loads(asked.body)["id"])
        if info is None:
            return Answer(404, {"message": "Job not found", "exceptionClassName": "ConfigNotFoundException"})
        return Answer(200, info)

    def list_jobs(self, asked: Asked) -> Answer:
        if not self.authorized(asked):
            return Answer(401, {"message": "Unauthorized"})
        start = asked.query.get("updatedAtStart")

        def updated(job: dict[str, Any]) -> float:
            return parse_rfc3339(with_seconds(job.get("lastUpdatedAt") or job["startTime"]))

        jobs = sorted(self.jobs, key=updated)
        if start is not None:
            jobs = [job for job in jobs if updated(job) >= parse_rfc3339(start)]
        offset, limit = int(asked.query.get("offset", "0")), int(asked.query.get("limit", "20"))
        page = [dict(job) for job in jobs[offset : offset + limit]]  # as they are now, not as they will be
        # As Airbyte's PaginationMapper: next is set whenever the page is not empty, "" otherwise.
        following = f"https://api.airbyte.com/v1/jobs?limit={limit}&offset={offset + limit}" if page else ""
        return Answer(200, {"data": page, "next": following, "previous": ""})


@pytest.fixture
def workspace(airbyte_api: ScriptedApi) -> AirbyteWorkspace:
    return AirbyteWorkspace(airbyte_api)


@pytest.fixture
def airbyte_config(config: Config, vendor: dict[str, tuple[ScriptedApi, str]]) -> Config:
    return dataclasses.replace(
        config,
        sources_airbyte_api_url=vendor["airbyte"][1],
        sources_airbyte_client_id=CLIENT[0],
        sources_airbyte_client_secret=CLIENT[1],
    )


#: The pollers' retry rule without its random draw: each wait is the whole step.
STEADY = AirbytePoller.BACKOFF.without_jitter()


def airbyte_poller(store: Store, config: Config, clock: FakeClock) -> AirbytePoller:
    return AirbytePoller(store, config, clock=clock, backoff=STEADY)


def stored_jobs(store: Store) -> dict[str, Any]:
    return {job.job_id: job for _, job in store.reads.jobs(JobFilter(), 10_000)}


def stored(store: Store, job_id: str) -> Job:
    """The stored job, streams included."""
    job = store.reads.job(job_id)
    assert job is not None, job_id
    return job


def polls(store: Store) -> dict[tuple[str, str], int]:
    return store.metrics.snapshot().polls


def jobs_counted(store: Store) -> int:
    return sum(sum(c.jobs.values()) for c in store.metrics.snapshot().connections)


#: The pages of jobs 1-250 (a second apart, the last T0 - 3350), 252 running and 251 failed at T0 - 60:
#: each asked from the newest finish read less a minute; the jobs read again are skipped, and when the
#: cursor stays, the next offset (an empty page) ends the poll.
PAGES_OF_252 = [
    (format_rfc3339(T0 - 86400), "0"),
    (format_rfc3339(T0 - 3560), "0"),
    (format_rfc3339(T0 - 3521), "0"),
    (format_rfc3339(T0 - 3482), "0"),
    (format_rfc3339(T0 - 3443), "0"),
    (format_rfc3339(T0 - 120), "0"),
    (format_rfc3339(T0 - 120), "100"),
]


def test_the_airbyte_poller_reads_every_page_and_each_job_becomes_the_job_it_describes(
    workspace: AirbyteWorkspace, airbyte_config: Config, store: Store, clock: FakeClock
) -> None:
    stripe = workspace.connection("Stripe → Snowflake")
    for job_id in range(1, 251):
        workspace.add(job_id, stripe, ended=T0 - 3600 + job_id)
    workspace.add(251, stripe, status="failed", ended=T0 - 60)
    workspace.add(252, stripe, status="running", ended=T0)
    poller = airbyte_poller(store, airbyte_config, clock)

    assert poller.poll_once() == "ok"

    jobs = stored_jobs(store)
    assert len(jobs) == 252
    first = jobs["airbyte:1"]
    assert (first.connection_name, first.status, first.platform, first.job_type) == (
        "Stripe → Snowflake",
        SUCCEEDED,
        "airbyte",
        "sync",
    )
    assert (first.created_at, first.finished_at, first.duration_seconds) == (T0 - 3600 + 1 - 310, T0 - 3599, 310.0)
    assert (first.records_synced, first.bytes_synced, first.connection_id) == (10, 1000, stripe)
    assert jobs["airbyte:251"].status == FAILED
    assert (jobs["airbyte:252"].status, jobs["airbyte:252"].finished_at) == (RUNNING, None)
    pages = workspace.api.requests_to("GET", "/jobs")
    # Each page from the cursor the one before left: the newest finish read, less a minute.
    assert [(p.query["updatedAtStart"], p.query["offset"]) for p in pages] == PAGES_OF_252
    assert {(p.query["jobType"], p.query["orderBy"], p.query["limit"]) for p in pages} == {
        ("sync", "updatedAt|ASC", "100")
    }
    assert store.metrics.snapshot().ingest_counts[("airbyte", "accepted")] == 252
    assert len(workspace.api.requests_to("POST", "/applications/token")) == 1
    assert len(workspace.api.requests_to("GET", f"/connections/{stripe}")) == 1
    assert store.source_polls.cursors("airbyte") == {"updated_at_start": format_rfc3339(T0 - 120)}
    assert polls(store)[("airbyte", "ok")] == 1
    assert store.metrics.snapshot().last_polls == {"airbyte": T0}


def test_the_next_airbyte_poll_starts_at_the_cursor_and_counts_no_job_twice(
    workspace: AirbyteWorkspace, airbyte_config: Config, store: Store, clock: FakeClock
) -> None:
    orders = workspace.connection("Orders")
    workspace.add(1, orders, ended=T0 - 120)
    workspace.add(2, orders, status="running", ended=T0 - 60)
    poller = airbyte_poller(store, airbyte_config, clock)
    assert poller.poll_once() == "ok"
    first_poll = len(workspace.api.requests_to("GET", "/jobs"))
    workspace.jobs[1] |= {"status": "failed", "lastUpdatedAt": airbyte_time(T0 + 30), "duration": "PT2M"}
    clock.advance(60)

    assert poller.poll_once() == "ok"

    second = workspace.api.requests_to("GET", "/jobs")[first_poll]
    assert second.query["updatedAtStart"] == format_rfc3339(T0 - 180)
    assert stored_jobs(store)["airbyte:2"].status == FAILED
    assert jobs_counted(store) == 2


def test_an_airbyte_token_is_renewed_before_it_expires_and_at_once_on_a_401(
    workspace: AirbyteWorkspace, airbyte_config: Config, store: Store, clock: FakeClock
) -> None:
    workspace.add(1, workspace.connection("Orders"), ended=T0 - 60)
    poller = airbyte_poller(store, airbyte_config, clock)
    assert poller.poll_once() == "ok"
    clock.advance(119)  # the token lives 180 s: renewed from 120 s on
    assert poller.poll_once() == "ok"
    assert workspace.tokens == ["token-1"]

    clock.advance(1)
    assert poller.poll_once() == "ok"
    assert workspace.tokens == ["token-1", "token-2"]

    workspace.valid.clear()  # revoked early: the next request gets 401
    assert poller.poll_once() == "ok"
    assert workspace.tokens == ["token-1", "token-2", "token-3"]
    assert polls(store)[("airbyte", "ok")] == 4


def test_airbyte_credentials_it_refuses_are_a_refused_poll(
    workspace: AirbyteWorkspace, airbyte_config: Config, store: Store, clock: FakeClock
) -> None:
    config = dataclasses.replace(airbyte_config, sources_airbyte_client_secret="not-the-secret")

    assert airbyte_poller(store, config, clock).poll_once() == "refused"
    assert polls(store)[("airbyte", "refused")] == 1
    assert "airbyte" not in store.metrics.snapshot().last_polls


def test_a_429_waits_for_its_retry_after_and_a_5xx_by_the_retry_rule_then_the_poll_goes_on(
    workspace: AirbyteWorkspace, airbyte_config: Config, store: Store, clock: FakeClock
) -> None:
    workspace.add(1, workspace.connection("Orders"), ended=T0 - 60)
    poller = airbyte_poller(store, airbyte_config, clock)
    workspace.api.fail_next(
        "GET",
        "/jobs",
        Answer(429, {"message": "Too Many Requests"}, {"Retry-After": "42"}),
        Answer(503, {"message": "Service Unavailable"}),
        Answer(503, {"message": "Service Unavailable"}),
    )

    assert [poller.step(), poller.step(), poller.step(), poller.step()] == [42.0, 10.0, 20.0, 60.0]
    assert stored_jobs(store).keys() == {"airbyte:1"}
    counted = polls(store)
    assert (counted[("airbyte", "rate_limited")], counted[("airbyte", "server_error")], counted[("airbyte", "ok")]) == (
        1,
        2,
        1,
    )


@pytest.mark.every_backend
def test_a_restart_in_the_middle_of_the_pages_loses_no_airbyte_job_and_counts_none_twice(
    workspace: AirbyteWorkspace,
    airbyte_config: Config,
    make_store: Callable[..., Store],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    orders = workspace.connection("Orders")
    for job_id in range(1, 161):
        workspace.add(job_id, orders, status="succeeded" if job_id % 5 else "failed", ended=T0 - 1000 + job_id)
    store = make_store(airbyte_config.data_path, clock=clock)
    first = airbyte_poller(store, airbyte_config, clock)
    # The first page is stored with its cursor; the process dies after storing the second page's jobs.
    save_cursors = store.source_polls.save_cursors
    saves: list[object] = []

    def save_then_die(*args: Any) -> None:
        saves.append(args)
        if len(saves) == 2:
            raise SystemExit("the process stops between storing the second page's jobs and its cursor")
        save_cursors(*args)

    monkeypatch.setattr(store.source_polls, "save_cursors", save_then_die)
    with pytest.raises(SystemExit):
        first.poll_once()
    monkeypatch.undo()
    first.stop()  # the process is gone: its role is free
    assert len(stored_jobs(store)) == 139  # the first page, and the second's jobs not read before
    store.close()

    restarted = make_store(airbyte_config.data_path, clock=clock)
    assert airbyte_poller(restarted, airbyte_config, clock).poll_once() == "ok"

    snapshot = restarted.metrics.snapshot()
    (orders_agg,) = snapshot.connections
    assert (orders_agg.jobs[SUCCEEDED], orders_agg.jobs[FAILED], orders_agg.jobs[CANCELLED]) == (128, 32, 0)
    assert snapshot.ingest_counts[("airbyte", "accepted")] == 160


def test_a_job_the_webhook_posted_and_the_poller_reads_is_one_job(
    workspace: AirbyteWorkspace, airbyte_config: Config, store: Store, clock: FakeClock
) -> None:
    payload = json.loads((ROOT / "tests" / "data" / "sources" / "airbyte" / "cloud-sync-completed.json").read_text())
    notice = airbyte.read_notification(payload, latest=T0)
    assert notice.job is not None
    store.ingest.jobs([notice.job], endpoint="airbyte")
    job_id = int(notice.job.job_id.removeprefix("airbyte:"))
    connection = workspace.connection(notice.job.connection_name)
    workspace.add(job_id, connection, ended=notice.job.finished_at or T0)

    assert airbyte_poller(store, airbyte_config, clock).poll_once() == "ok"

    assert jobs_counted(store) == 1
    assert stored_jobs(store)[notice.job.job_id].source == notice.job.source


# ------------------------------------------------------------------------------------------ Fivetran


class FivetranAccount:
    """Connections of a Fivetran account, answered as ``GET /v1/connections`` does, ``size`` a page."""

    def __init__(self, api: ScriptedApi) -> None:
        self.api = api
        self.connections: list[dict[str, Any]] = []
        self.fixture = json.loads(GO_FIVETRAN_FIXTURE.read_text())["data"]["items"][0]
        api.routes[("GET", "/v1/connections")] = self.list_connections

    def add(self, ident: str, name: str, **times: Any) -> dict[str, Any]:
        connection = copy.deepcopy(self.fixture) | {"id": ident, "schema": name, "service": "google_sheets"}
        # go-fivetran's fixture writes setup_tests[].details as a string where Fivetran's document says
        # object (Prism refuses it); the poller reads neither.
        for test in connection["setup_tests"]:
            test["details"] = {"message": test["details"]}
        for key in ("succeeded_at", "failed_at"):
            connection.pop(key)
            if times.get(key) is not None:
                connection[key] = format_rfc3339(times[key])
        self.connections.append(connection)
        return connection

    def list_connections(self, asked: Asked) -> Answer:
        if asked.headers.get("authorization") != "Basic a2V5LWZvci10ZXN0czpzZWNyZXQtZm9yLXRlc3Rz":
            return Answer(401, {"code": "AuthFailed", "message": "Invalid API key"})
        limit = int(asked.query.get("limit", "100"))
        start = int(asked.query.get("cursor", "0"))
        page = self.connections[start : start + limit]
        data: dict[str, Any] = {"items": page}
        if start + limit < len(self.connections):
            data["next_cursor"] = str(start + limit)
        return Answer(200, {"code": "Success", "message": "Operation performed.", "data": data})


@pytest.fixture
def account(fivetran_api: ScriptedApi) -> FivetranAccount:
    return FivetranAccount(fivetran_api)


@pytest.fixture
def fivetran_config(config: Config, vendor: dict[str, tuple[ScriptedApi, str]]) -> Config:
    return dataclasses.replace(
        config,
        sources_fivetran_api_url=vendor["fivetran"][1],
        sources_fivetran_api_key="key-for-tests",
        sources_fivetran_api_secret="secret-for-tests",
    )


def fivetran_poller(store: Store, config: Config, clock: FakeClock) -> FivetranPoller:
    return FivetranPoller(store, config, clock=clock, backoff=STEADY)


def test_the_fivetran_poller_reads_every_page_and_makes_each_new_success_and_failure_a_job(
    account: FivetranAccount, fivetran_config: Config, store: Store, clock: FakeClock
) -> None:
    for n in range(250):
        account.add(f"conn_{n:03d}", f"sheets_{n:03d}", succeeded_at=T0 - 3600 + n)
    account.add("conn_broken", "salesforce", succeeded_at=T0 - 7200, failed_at=T0 - 600)
    account.add("conn_new", "never_synced")

    assert fivetran_poller(store, fivetran_config, clock).poll_once() == "ok"

    jobs = stored_jobs(store)
    assert len(jobs) == 252
    success = jobs[f"fivetran:conn_007:{format_rfc3339(T0 - 3593)}"]
    assert (success.connection_name, success.status, success.finished_at, success.source, success.platform) == (
        "sheets_007",
        SUCCEEDED,
        T0 - 3593,
        "google_sheets",
        "fivetran",
    )
    failure = jobs[f"fivetran:conn_broken:{format_rfc3339(T0 - 600)}"]
    assert (failure.status, failure.error_summary) == (FAILED, "resync_table_warning: Resync Table Warning")
    assert [asked.query.get("cursor") for asked in account.api.requests_to("GET", "/v1/connections")] == [
        None,
        "100",
        "200",
    ]
    assert {asked.headers["accept"] for asked in account.api.requests_to("GET", "/v1/connections")} == {
        "application/json;version=2"
    }
    # What each connection reports of itself: go-fivetran's fixture's status, schedule and pause.
    assert store.metrics.snapshot().connection_states["salesforce"] == ConnectionState(
        "salesforce", {"setup": "connected", "sync": "scheduled", "update": "delayed"}, False, 21600.0
    )


def test_reading_fivetran_again_makes_only_the_syncs_that_ended_since_into_jobs(
    account: FivetranAccount, fivetran_config: Config, store: Store, clock: FakeClock
) -> None:
    orders = account.add("conn_orders", "orders", succeeded_at=T0 - 600)
    poller = fivetran_poller(store, fivetran_config, clock)
    assert poller.poll_once() == "ok"
    assert poller.poll_once() == "ok"
    assert jobs_counted(store) == 1

    clock.advance(120)
    orders["failed_at"] = format_rfc3339(T0 + 60)
    assert poller.poll_once() == "ok"

    assert jobs_counted(store) == 2
    assert stored_jobs(store)[f"fivetran:conn_orders:{format_rfc3339(T0 + 60)}"].status == FAILED


@pytest.mark.every_backend
def test_a_fivetran_poll_that_fails_in_the_middle_keeps_what_it_read_and_the_next_counts_none_twice(
    account: FivetranAccount, fivetran_config: Config, make_store: Callable[..., Store], clock: FakeClock
) -> None:
    for n in range(150):
        account.add(f"conn_{n:03d}", f"sheets_{n:03d}", succeeded_at=T0 - 3600 + n)
    store = make_store(fivetran_config.data_path, clock=clock)
    poller = fivetran_poller(store, fivetran_config, clock)
    account.api.routes[("GET", "/v1/connections")] = lambda asked: (
        Answer(503, {"code": "ServiceUnavailable", "message": "try later"})
        if asked.query.get("cursor")
        else account.list_connections(asked)
    )
    assert poller.poll_once() == "server_error"
    assert jobs_counted(store) == 100
    poller.stop()  # restarted: the role is free for the new process
    store.close()

    account.api.routes[("GET", "/v1/connections")] = account.list_connections
    restarted = make_store(fivetran_config.data_path, clock=clock)
    assert fivetran_poller(restarted, fivetran_config, clock).poll_once() == "ok"

    assert jobs_counted(restarted) == 150
    assert restarted.metrics.snapshot().ingest_counts[("fivetran", "accepted")] == 150


def test_fivetran_s_429_is_waited_out_as_its_retry_after_says(
    account: FivetranAccount, fivetran_config: Config, store: Store, clock: FakeClock
) -> None:
    account.add("conn_orders", "orders", succeeded_at=T0 - 600)
    poller = fivetran_poller(store, fivetran_config, clock)
    account.api.fail_next(
        "GET",
        "/v1/connections",
        Answer(429, {"code": "TooManyRequests", "message": "slow down"}, {"Retry-After": "90"}),
    )

    assert poller.step() == 90.0
    assert poller.step() == 300.0
    assert jobs_counted(store) == 1


def test_fivetran_credentials_it_refuses_are_a_refused_poll(
    account: FivetranAccount, fivetran_config: Config, store: Store, clock: FakeClock
) -> None:
    config = dataclasses.replace(fivetran_config, sources_fivetran_api_secret="wrong")

    assert fivetran_poller(store, config, clock).poll_once() == "refused"
    assert polls(store)[("fivetran", "refused")] == 1


def test_with_the_fivetran_webhook_configured_the_poller_leaves_the_jobs_to_it(
    account: FivetranAccount, fivetran_config: Config, store: Store, clock: FakeClock
) -> None:
    account.add("conn_orders", "orders", succeeded_at=T0 - 600)
    config = dataclasses.replace(fivetran_config, sources_fivetran_webhook_secret="webhook-secret-for-tests")

    assert fivetran_poller(store, config, clock).poll_once() == "ok"

    assert stored_jobs(store) == {}
    assert store.source_polls.cursors("fivetran") == {"conn_orders": json.dumps([T0 - 600, None])}


def test_prism_refuses_a_request_the_vendor_document_does_not_allow(
    vendor: dict[str, tuple[ScriptedApi, str]], airbyte_api: ScriptedApi
) -> None:
    """The check the poller tests rest on: Prism, not the scripted API, decides what is a valid request."""
    answer = requests.get(f"{vendor['airbyte'][1]}/jobs", params={"limit": "500"}, timeout=10)

    assert answer.status_code == 422
    assert answer.json()["validation"][0]["location"] == ["query", "limit"]
    assert airbyte_api.asked == []


def test_a_served_exporter_polls_both_apis_from_one_worker_and_shows_their_jobs_and_health(
    workspace: AirbyteWorkspace,
    account: FivetranAccount,
    vendor: dict[str, tuple[ScriptedApi, str]],
    exporter_process: Callable[..., Any],
) -> None:
    now = time.time()
    workspace.add(77, workspace.connection("Stripe → Snowflake"), ended=now - 120)
    account.add("conn_orders", "orders", succeeded_at=now - 300, failed_at=now - 60)
    env = {
        "CALABI_SOURCES__AIRBYTE__API_URL": vendor["airbyte"][1],
        "CALABI_SOURCES__AIRBYTE__CLIENT_ID": CLIENT[0],
        "CALABI_SOURCES__AIRBYTE__CLIENT_SECRET": CLIENT[1],
        "CALABI_SOURCES__FIVETRAN__API_URL": vendor["fivetran"][1],
        "CALABI_SOURCES__FIVETRAN__API_KEY": "key-for-tests",
        "CALABI_SOURCES__FIVETRAN__API_SECRET": "secret-for-tests",
    }
    exporter = exporter_process(workers=2, env=env)

    def polled() -> bool:
        samples = exporter.scrape()
        return all(
            (samples.get_value("calabi_exporter_source_polls_total", source=source, outcome="ok") or 0) >= 1
            for source in ("airbyte", "fivetran")
        )

    wait_until(polled, timeout=60, what="both pollers to poll once")
    samples = exporter.scrape()
    assert samples.value("calabi_sync_jobs_total", connection="Stripe → Snowflake", status="succeeded") == 1
    assert samples.value("calabi_sync_jobs_total", connection="orders", status="succeeded") == 1
    assert samples.value("calabi_sync_jobs_total", connection="orders", status="failed") == 1
    assert (
        samples.value(
            "calabi_sync_connection_info",
            connection="orders",
            connection_id="conn_orders",
            source="google_sheets",
            destination="",
            platform="fivetran",
        )
        == 1
    )
    assert (
        samples.get_value("calabi_exporter_source_last_successful_poll_timestamp_seconds", source="airbyte") is not None
    )
    # Two workers, one poller of each: each API was asked once per poll, not once per worker.
    assert len(workspace.api.requests_to("POST", "/applications/token")) == 1


def test_with_the_configuration_api_a_finished_job_gets_its_streams_start_and_failure(
    workspace: AirbyteWorkspace,
    airbyte_config: Config,
    vendor: dict[str, tuple[ScriptedApi, str]],
    store: Store,
    clock: FakeClock,
) -> None:
    orders = workspace.connection("Orders")
    workspace.add(135, orders, ended=T0 - 600)
    workspace.add(11, orders, status="failed", ended=T0 - 300)
    workspace.add(12, orders, status="failed", ended=T0 - 200)  # Airbyte has no details of it: 404
    workspace.add(13, orders, status="running", ended=T0)  # not finished: no details asked
    sources = DATA / "sources" / "airbyte"
    workspace.infos[135] = json.loads((sources / "airflow-jobs-get-succeeded.json").read_text())
    workspace.infos[11] = json.loads((sources / "datahub-job-failed.jobs-get.json").read_text())
    config = dataclasses.replace(airbyte_config, sources_airbyte_config_api_url=vendor["airbyte-config"][1])

    assert airbyte_poller(store, config, clock).poll_once() == "ok"

    assert [(s.name, s.status, s.records_synced) for s in stored(store, "airbyte:135").streams] == [
        ("vehicle", SUCCEEDED, 0),
        ("location", SUCCEEDED, 0),
    ]
    assert stored(store, "airbyte:11").error_summary == (
        "Message: HikariPool-1 - Connection is not available, request timed out after 10003ms."
        " (type: config_error, origin: source)"
    )
    twelve = stored(store, "airbyte:12")
    assert (twelve.status, twelve.error_summary, twelve.streams) == (
        FAILED,
        None,
        (),
    )
    asked = [json.loads(a.body)["id"] for a in workspace.api.requests_to("POST", "/v1/jobs/get_without_logs")]
    assert sorted(asked) == [11, 12, 135]


def test_the_new_connections_limit_of_ingest_tokens_does_not_hold_back_a_poller_s_connections(
    account: FivetranAccount, fivetran_config: Config, make_store: Callable[..., Store], clock: FakeClock
) -> None:
    """The operator configured the poller: its connections are not a sender's to limit, and one refused
    would be marked as seen and never come again."""
    for n in range(8):
        account.add(f"conn_{n}", f"sheets_{n}", succeeded_at=T0 - 600 + n)
    store = make_store(fivetran_config.data_path, clock=clock, limits=SeriesLimits(new_connections_per_hour=5))

    assert fivetran_poller(store, fivetran_config, clock).poll_once() == "ok"

    assert jobs_counted(store) == 8


def test_a_job_updated_while_the_pages_are_read_costs_no_other_job(
    workspace: AirbyteWorkspace, airbyte_config: Config, store: Store, clock: FakeClock
) -> None:
    """It moves to the end of the list and shifts those after it back into a page already read."""
    orders = workspace.connection("Orders")
    for job_id in range(1, 151):
        workspace.add(job_id, orders, ended=T0 - 86000 + 120 * job_id)  # two minutes apart
    list_jobs = workspace.list_jobs

    def update_job_5_after_the_first_page(asked: Asked) -> Answer:
        answer = list_jobs(asked)
        if len(workspace.api.requests_to("GET", "/jobs")) == 1:
            workspace.jobs[4] |= {"status": "failed", "lastUpdatedAt": airbyte_time(T0 - 10)}
        return answer

    workspace.api.routes[("GET", "/jobs")] = update_job_5_after_the_first_page

    assert airbyte_poller(store, airbyte_config, clock).poll_once() == "ok"

    assert len(stored_jobs(store)) == 150
    assert stored(store, "airbyte:5").status == SUCCEEDED  # read as it was: a finished job's status is final


def test_a_job_dated_in_the_future_is_refused_and_does_not_carry_the_cursor_past_the_others(
    workspace: AirbyteWorkspace, airbyte_config: Config, store: Store, clock: FakeClock
) -> None:
    orders = workspace.connection("Orders")
    workspace.add(1, orders, ended=T0 - 600)
    workspace.add(2, orders, ended=T0 + 86400 * 365 * 70)
    poller = airbyte_poller(store, airbyte_config, clock)

    assert poller.poll_once() == "ok"
    workspace.add(3, orders, ended=T0 + 30)
    clock.advance(60)
    assert poller.poll_once() == "ok"

    assert stored_jobs(store).keys() == {"airbyte:1", "airbyte:3"}
    assert store.metrics.snapshot().rejections == {("airbyte", "startTime"): 2}  # read twice, refused twice
