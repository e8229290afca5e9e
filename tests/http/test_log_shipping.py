"""Job logs reach a real OTLP/HTTP receiver exactly as Loki should see them, and survive outages."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest
from calabi_exporter.config import Config
from calabi_exporter.logship import LogShipper
from calabi_exporter.store import Store
from calabi_exporter.timeutil import format_rfc3339, parse_rfc3339
from calabi_exporter.web import background_workers, create_app
from flask.testing import FlaskClient

from tests.support.capture_servers import MisbehavingServer
from tests.support.clock import T0, FakeClock
from tests.support.jobs import job
from tests.support.otlp_receiver import PARTIAL, REFUSAL, Receiver
from tests.support.processes import free_port
from tests.support.redaction_samples import SECRETS
from tests.support.samples import parse_samples
from tests.support.waiting import wait_until

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

LOG = """\
2026-04-06T08:00:01Z INFO Syncing stream: Account
2026-04-06T08:00:19Z INFO Stream Account: 4,218 records synced in 18.2s
2026-04-06T08:00:20Z WARN Salesforce API rate limit at 85% — throttling requests
2026-04-06T08:00:21Z DEBUG Connector internals
2026-04-06T08:00:22Z ERROR Response 401: {"error": "invalid_token"}
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def shipping_config(tmp_path: Path, receiver: Receiver) -> Config:
    return Config(
        data_dir=str(tmp_path / "data"),
        otlp_logs_endpoint=receiver.url,
        otlp_timeout_seconds=3.0,
        otlp_batch_size=100,
        service_instance_id="exporter-1",
        deployment_environment="test",
    )


@pytest.fixture
def outbox_store(shipping_config: Config, clock: FakeClock, make_store: Callable[..., Store]) -> Iterator[Store]:
    store = make_store(shipping_config.data_path, clock=clock, outbox=True)
    yield store
    store.close()


@pytest.fixture
def api(shipping_config: Config, outbox_store: Store, clock: FakeClock) -> FlaskClient:
    return create_app(shipping_config, store=outbox_store, clock=clock).test_client()


@pytest.fixture
def shipper(shipping_config: Config, outbox_store: Store, clock: FakeClock) -> Iterator[LogShipper]:
    shipper = LogShipper(outbox_store, shipping_config, clock=clock, backoff=LogShipper.BACKOFF.without_jitter())
    yield shipper
    shipper.stop()


def ship_all(shipper: LogShipper, steps: int = 50) -> None:
    """Ship until the outbox is empty (bounded)."""
    for _ in range(steps):
        if shipper.ship_once() > 0 and not shipper._outbox.read(1):
            return
    raise AssertionError("the outbox did not empty")


def post_job_with_logs(api: FlaskClient, job_id: str = "job_1", log: str = LOG) -> None:
    assert api.post("/api/v1/jobs", json=job(job_id, "running", connection_id="conn-42")).status_code == 200
    assert api.post(f"/api/v1/jobs/{job_id}/logs", data=log, content_type="text/plain").status_code == 200


def finish(api: FlaskClient, job_id: str = "job_1") -> None:
    record = job(
        job_id,
        "succeeded",
        started_at="2026-04-06T08:00:00Z",
        finished_at="2026-04-06T08:00:30Z",
        records_synced=4218,
        records_failed=0,
        bytes_synced=1_048_576,
        streams=[{"name": "Account", "status": "succeeded", "records_synced": 4218}],
        job_url="https://calabi.example.com/jobs/1",
    )
    assert api.post("/api/v1/jobs", json=record).status_code == 200


def nanos(text: str) -> int:
    return round(parse_rfc3339(text) * 1e9)


def test_a_known_job_arrives_as_exact_log_records_and_one_summary(
    api: FlaskClient, shipper: LogShipper, receiver: Receiver
) -> None:
    post_job_with_logs(api)
    finish(api)

    ship_all(shipper)

    resources = {tuple(sorted(r.resource.items())) for r in receiver.records}
    assert resources == {
        (
            ("connection", "Salesforce → Snowflake"),
            ("deployment.environment", "test"),
            ("service.instance.id", "exporter-1"),
            ("service.name", "calabi-connect"),
        )
    }
    base = {"job_id": "job_1", "connection": "Salesforce → Snowflake", "connection_id": "conn-42"}
    lines = [(r.body, r.severity_number, r.severity_text, r.time_unix_nano, r.attributes) for r in receiver.records]
    assert lines == [
        (
            "Syncing stream: Account",
            9,
            "INFO",
            nanos("2026-04-06T08:00:01Z"),
            {**base, "stream": "Account", "event": "log"},
        ),
        (
            "Stream Account: 4,218 records synced in 18.2s",
            9,
            "INFO",
            nanos("2026-04-06T08:00:19Z"),
            {**base, "stream": "Account", "event": "log"},
        ),
        (
            "Salesforce API rate limit at 85% — throttling requests",
            13,
            "WARN",
            nanos("2026-04-06T08:00:20Z"),
            {**base, "event": "log"},
        ),
        (
            'Response 401: {"error": "invalid_token"}',
            17,
            "ERROR",
            nanos("2026-04-06T08:00:22Z"),
            {**base, "event": "log"},
        ),
        (
            "Job job_1 succeeded; records synced 4218; records failed 0; streams succeeded 1 / 1",
            9,
            "INFO",
            nanos("2026-04-06T08:00:30Z"),
            {
                **base,
                "event": "job_summary",
                "status": "succeeded",
                "records_synced": 4218,
                "records_failed": 0,
                "bytes_synced": 1_048_576,
                "duration_seconds": 30.0,
                "streams_succeeded": 1,
                "streams_failed": 0,
                "job_url": "https://calabi.example.com/jobs/1",
                "started_at": "2026-04-06T08:00:00Z",
                "finished_at": "2026-04-06T08:00:30Z",
            },
        ),
    ]
    assert {r.observed_time_unix_nano for r in receiver.records} == {round(T0 * 1e9)}


def test_debug_lines_ship_only_for_connections_in_debug_mode(
    tmp_path: Path, receiver: Receiver, clock: FakeClock, make_store: Callable[..., Store]
) -> None:
    from calabi_exporter.config import ConnectionSettings

    config = Config(
        data_dir=str(tmp_path / "d"),
        otlp_logs_endpoint=receiver.url,
        connections={"Stripe → Postgres": ConnectionSettings(debug_logs=True)},
    )
    store = make_store(config.data_path, clock=clock, outbox=True)
    client = create_app(config, store=store, clock=clock).test_client()
    for job_id, connection in (("a", "Stripe → Postgres"), ("b", "Salesforce → Snowflake")):
        assert client.post("/api/v1/jobs", json=job(job_id, "running", connection=connection)).status_code == 200
        body = "2026-04-06T08:00:01Z DEBUG page 2 of 9\n"
        assert client.post(f"/api/v1/jobs/{job_id}/logs", data=body, content_type="text/plain").status_code == 200
    shipper = LogShipper(store, config, clock=clock)

    ship_all(shipper)

    assert [(r.attributes["job_id"], r.body, r.severity_text) for r in receiver.records] == [
        ("a", "page 2 of 9", "DEBUG")
    ]
    shipper.stop()
    store.close()


def test_an_outage_keeps_everything_waiting_and_the_receiver_gets_it_all_when_back(
    api: FlaskClient, shipper: LogShipper, receiver: Receiver, outbox_store: Store
) -> None:
    port = receiver.port
    receiver.stop()
    post_job_with_logs(api)

    wait = shipper.ship_once()

    assert wait == LogShipper.BACKOFF.first
    samples = parse_samples(api.get("/metrics").get_data(as_text=True))
    assert samples.value("calabi_exporter_log_outbox_records") == 5  # every line, DEBUG too (skipped when shipped)
    assert samples.value("calabi_exporter_log_records_total", outcome="failed") == 1  # only the oldest was tried
    assert samples.get_value("calabi_exporter_log_export_last_success_timestamp_seconds") is None
    assert shipper.ship_once() == 2 * LogShipper.BACKOFF.first  # backing off

    receiver.port = port
    receiver.start()
    ship_all(shipper)

    assert [r.body for r in receiver.records] == [
        "Syncing stream: Account",
        "Stream Account: 4,218 records synced in 18.2s",
        "Salesforce API rate limit at 85% — throttling requests",
        'Response 401: {"error": "invalid_token"}',
    ]
    samples = parse_samples(api.get("/metrics").get_data(as_text=True))
    assert {
        outcome: samples.value("calabi_exporter_log_records_total", outcome=outcome)
        for outcome in ("exported", "failed", "dead_lettered")
    } == {"exported": 4, "failed": 2, "dead_lettered": 0}
    assert samples.value("calabi_exporter_log_outbox_records") == 0
    assert samples.value("calabi_exporter_log_export_last_success_timestamp_seconds") == T0


def test_a_server_busy_answer_is_retried(api: FlaskClient, shipper: LogShipper, receiver: Receiver) -> None:
    receiver.answers.append((503, {}))
    post_job_with_logs(api)

    ship_all(shipper)

    assert receiver.requests == 3  # the first record alone, answered 503 then 200; then the rest
    assert len(receiver.records) == 4


def test_retry_after_is_honoured_when_it_is_longer_than_the_export_timeout(
    api: FlaskClient, shipper: LogShipper, receiver: Receiver, outbox_store: Store
) -> None:
    receiver.answers.append((429, {"Retry-After": "30"}))
    post_job_with_logs(api)

    assert shipper.ship_once() == 30.0
    assert receiver.records == []
    assert outbox_store.metrics.snapshot().shipping.waiting == 5

    ship_all(shipper)
    assert len(receiver.records) == 4


SEVEN_LINES: Final = [f"line {i}" for i in range(1, 8)]


def ship_seven_lines_and(api: FlaskClient, shipper: LogShipper, odd_one: str) -> None:
    """Post job_1 with the INFO lines of :data:`SEVEN_LINES` and, fourth, ``odd_one`` as an ERROR; ship them all."""
    lines = [f"2026-04-06T08:00:{i:02d}Z INFO line {i}" for i in range(1, 8)]
    lines.insert(3, f"2026-04-06T08:00:30Z ERROR {odd_one}")
    post_job_with_logs(api, log="\n".join(lines) + "\n")
    ship_all(shipper)


def test_a_refused_record_is_dead_lettered_alone_and_the_rest_is_shipped(
    api: FlaskClient, shipper: LogShipper, receiver: Receiver, outbox_store: Store
) -> None:
    receiver.refuse_marker = "REFUSE-ME"

    ship_seven_lines_and(api, shipper, "REFUSE-ME: structured metadata too large")

    bodies = [r.body for r in receiver.records]
    assert sorted(set(bodies)) == SEVEN_LINES
    assert len(bodies) <= 4 * 8  # re-sent halves: bounded by the split depth, never a flood
    dead = outbox_store.outbox.dead_letters()
    assert [(job_id, reason) for _, job_id, reason in dead] == [
        ("job_1", f"refused by the receiver (HTTP 400): {REFUSAL}")
    ]
    stats = outbox_store.metrics.snapshot().shipping
    assert (stats.waiting, stats.exported, stats.dead_lettered) == (0, 7, 1)
    listed = api.get("/api/v1/logs/dead-letters").get_json()["dead_letters"]
    assert [(d["job_id"], d["reason"]) for d in listed] == [("job_1", f"refused by the receiver (HTTP 400): {REFUSAL}")]


def test_lines_older_than_the_receivers_limit_are_dead_lettered_without_being_sent(
    api: FlaskClient, shipper: LogShipper, receiver: Receiver, outbox_store: Store
) -> None:
    old = "2026-03-01T08:00:00Z INFO a backfilled line from March\n2026-04-06T08:00:01Z INFO today\n"
    post_job_with_logs(api, log=old)

    ship_all(shipper)

    assert [r.body for r in receiver.records] == ["today"]
    assert [reason for _, _, reason in outbox_store.outbox.dead_letters()] == [
        "older than log_max_age_seconds (601200 s), which Loki refuses"
    ]


def received_bodies(receiver: Receiver) -> list[str]:
    with receiver.lock:
        return [r.body for r in receiver.records]


def test_lines_ingested_while_the_receiver_is_down_all_arrive_once_it_is_back(tmp_path: Path) -> None:
    """The shipper in its own thread, as ``serve`` runs it; how little it costs ingestion is measured in
    bench/bench_log_shipping.py ("Ingestion while Loki is down")."""
    port = free_port()
    config = Config(
        data_dir=str(tmp_path / "data"),
        otlp_logs_endpoint=f"http://127.0.0.1:{port}/otlp/v1/logs",
        otlp_timeout_seconds=1.0,
    )
    app = create_app(config)
    client = app.test_client()
    workers = background_workers(app)
    assert workers is not None and workers.shipper is not None
    workers.shipper.start()
    start = time.time() - 3600
    assert client.post("/api/v1/jobs", json=job("job-1", "running")).status_code == 200
    for r in range(100):
        body = "".join(f"{format_rfc3339(start + r * 100 + i)} INFO request {r} line {i}\n" for i in range(100))
        assert client.post("/api/v1/jobs/job-1/logs", data=body, content_type="text/plain").status_code == 200

    receiver = Receiver(port=port)
    receiver.start()
    try:
        wait_until(
            lambda: len(set(received_bodies(receiver))) >= 10_000,
            timeout=90,
            what="10,000 distinct lines at the receiver",
        )
        bodies = received_bodies(receiver)
    finally:
        workers.shipper.stop()
        receiver.stop()
        app.extensions["calabi_exporter"].store.close()
    assert len(set(bodies)) == 10_000
    assert len(bodies) - 10_000 <= 1000  # duplicates, if any, bounded by one batch


def test_no_secret_reaches_the_receiver(api: FlaskClient, shipper: LogShipper, receiver: Receiver) -> None:
    failed = job("job_s", "failed", error_summary=SECRETS[0][0], finished_at="2026-04-06T08:05:00Z")
    assert api.post("/api/v1/jobs", json=job("job_s", "running")).status_code == 200
    log = "".join(f"2026-04-06T08:00:{i:02d}Z ERROR {text}\n" for i, (text, _, _) in enumerate(SECRETS))
    assert api.post("/api/v1/jobs/job_s/logs", data=log, content_type="text/plain").status_code == 200
    assert api.post("/api/v1/jobs", json=failed).status_code == 200

    ship_all(shipper)

    shipped = repr(receiver.records)
    assert len(receiver.records) == len(SECRETS) + 1
    for _, secret, _ in SECRETS:
        assert secret not in shipped
    assert [r.body for r in receiver.records[:-1]] == [expected for _, _, expected in SECRETS]


def test_the_instance_id_defaults_to_the_host_name_so_restarts_keep_one_loki_stream() -> None:
    import socket

    from calabi_exporter.logship import resource_for

    first = resource_for(Config(), "Stripe → Postgres").attributes
    again = resource_for(Config(), "Stripe → Postgres").attributes

    assert first["service.instance.id"] == socket.gethostname()
    assert dict(first) == dict(again)
    assert "service.namespace" not in first and "deployment.environment" not in first


def post_logs_on_two_connections(api: FlaskClient, stamp: str) -> None:
    """job_a and job_b, on two connections, with three lines each at ``stamp`` + 0, 1, 2 seconds."""
    for job_id, connection in (("job_a", "Salesforce → Snowflake"), ("job_b", "Stripe → Postgres")):
        assert api.post("/api/v1/jobs", json=job(job_id, "running", connection=connection)).status_code == 200
        log = "".join(f"{stamp}{i}Z INFO {job_id} line {i}\n" for i in range(3))
        assert api.post(f"/api/v1/jobs/{job_id}/logs", data=log, content_type="text/plain").status_code == 200


def times_by_body(receiver: Receiver) -> dict[str, set[int]]:
    """The times each line was received at."""
    sent: dict[str, set[int]] = {}
    for record in receiver.records:
        sent.setdefault(record.body, set()).add(record.time_unix_nano)
    return sent


@pytest.fixture
def one_request_shipper(shipping_config: Config, outbox_store: Store, clock: FakeClock) -> Iterator[LogShipper]:
    """A shipper whose every attempt is one request: its export time limit is below the OTLP exporter's
    first retry delay (1 s ± 20 %), so queued answers meet the same attempts however loaded the machine is."""
    config = dataclasses.replace(shipping_config, otlp_timeout_seconds=0.75)
    shipper = LogShipper(outbox_store, config, clock=clock, backoff=LogShipper.BACKOFF.without_jitter())
    yield shipper
    shipper.stop()


def test_late_records_of_a_batch_tried_again_after_a_failure_go_at_the_times_they_first_went_at(
    api: FlaskClient, one_request_shipper: LogShipper, receiver: Receiver, clock: FakeClock
) -> None:
    post_logs_on_two_connections(api, "2026-04-06T06:00:0")  # two hours old: past five sixths of Loki's window
    # The oldest record alone (the shipper starts cautious), then job_a's stream, then job_b's fails twice.
    receiver.answers.extend([(200, {}), (200, {}), (503, {}), (503, {})])

    ship_all(one_request_shipper)

    sent = times_by_body(receiver)
    assert sorted(sent) == sorted(f"{j} line {i}" for j in ("job_a", "job_b") for i in range(3))
    assert [len(times) for times in sent.values()] == [1] * 6  # re-sent at the very same time
    assert len([r for r in receiver.records if r.body == "job_a line 1"]) == 1  # done before job_b failed
    times = sorted(t for times in sent.values() for t in times)
    assert times[0] == round((T0 - 3000) * 1e9) and times == list(range(times[0], times[0] + 6))
    assert {r.attributes["log_time"] for r in receiver.records if r.body == "job_a line 2"} == {"2026-04-06T06:00:02Z"}


def test_a_retry_after_of_a_day_waits_at_most_five_minutes(
    api: FlaskClient, shipper: LogShipper, receiver: Receiver
) -> None:
    receiver.answers.append((429, {"Retry-After": "86400"}))
    post_job_with_logs(api)

    assert shipper.ship_once() == LogShipper.BACKOFF.retry_after_cap == 300.0


def test_a_record_sent_at_its_own_time_goes_at_that_time_again_when_its_batch_is_retried_later(
    api: FlaskClient, one_request_shipper: LogShipper, receiver: Receiver, clock: FakeClock
) -> None:
    post_logs_on_two_connections(api, "2026-04-06T07:11:0")  # 49 minutes old: sent at its own time
    receiver.answers.extend([(200, {}), (200, {}), (503, {}), (503, {})])
    one_request_shipper.ship_once()  # the oldest record alone
    one_request_shipper.ship_once()  # job_a's stream goes through, job_b's fails
    clock.advance(120)  # the records are past the horizon now

    ship_all(one_request_shipper)

    sent = times_by_body(receiver)
    assert sent["job_b line 1"] == {nanos("2026-04-06T07:11:01Z")}  # tried twice before, at the same time
    assert all("log_time" not in r.attributes for r in receiver.records if r.body.startswith("job_b"))


PROXY_400: Final = (400, {"Content-Type": "text/html"}, b"<html><body><h1>400 Bad Request</h1>nginx</body></html>")
PROXY_403: Final = (403, {"Content-Type": "text/plain"}, b"Forbidden by proxy policy")
SHIPPED: Final = [
    "Syncing stream: Account",
    "Stream Account: 4,218 records synced in 18.2s",
    "Salesforce API rate limit at 85% — throttling requests",
    'Response 401: {"error": "invalid_token"}',
]


def test_a_400_the_receiver_does_not_explain_is_retried_and_nothing_is_dead_lettered_when_it_stops(
    api: FlaskClient, shipper: LogShipper, receiver: Receiver, outbox_store: Store, clock: FakeClock
) -> None:
    receiver.answers.extend([PROXY_400] * 3)  # a misconfigured proxy for 40 minutes
    post_job_with_logs(api)

    for _ in range(3):
        assert shipper.ship_once() > 0
        assert outbox_store.outbox.dead_letters() == []
        clock.advance(1200)
    ship_all(shipper)

    assert [r.body for r in receiver.records] == SHIPPED
    assert outbox_store.outbox.dead_letters() == []
    stats = outbox_store.metrics.snapshot().shipping
    assert (stats.waiting, stats.exported, stats.failed, stats.dead_lettered) == (0, 4, 3, 0)


def test_a_4xx_the_receiver_does_not_explain_dead_letters_after_the_bound_and_a_redrive_ships_the_records(
    api: FlaskClient, shipper: LogShipper, receiver: Receiver, outbox_store: Store, clock: FakeClock
) -> None:
    receiver.answers.extend([PROXY_403] * 20)
    post_job_with_logs(api)
    assert shipper.ship_once() > 0  # retried for log_refused_retry_seconds, an hour
    clock.advance(3600)

    ship_all(shipper)

    assert receiver.records == []
    reason = "refused by the receiver (HTTP 403, for 3600 s): Forbidden by proxy policy"
    assert [(job_id, why) for _, job_id, why in outbox_store.outbox.dead_letters()] == [("job_1", reason)] * 4

    receiver.answers.clear()  # the proxy is fixed
    answer = api.post("/api/v1/logs/dead-letters/redrive", json={"connection": "Salesforce → Snowflake"})
    assert (answer.status_code, answer.get_json()) == (200, {"requeued": 4, "connection": "Salesforce → Snowflake"})
    ship_all(shipper)

    assert [r.body for r in receiver.records] == SHIPPED
    assert outbox_store.outbox.dead_letters() == []
    assert outbox_store.metrics.snapshot().shipping.waiting == 0


def test_a_redrive_for_one_connection_leaves_the_others_dead_letters(
    api: FlaskClient, shipper: LogShipper, receiver: Receiver, outbox_store: Store, clock: FakeClock
) -> None:
    receiver.answers.extend([PROXY_403] * 20)
    post_logs_on_two_connections(api, "2026-04-06T07:59:0")
    assert shipper.ship_once() > 0
    clock.advance(3600)
    ship_all(shipper)
    assert len(outbox_store.outbox.dead_letters()) == 6
    receiver.answers.clear()

    answer = api.post("/api/v1/logs/dead-letters/redrive", json={"connection": "Stripe → Postgres"})
    ship_all(shipper)

    assert answer.get_json() == {"requeued": 3, "connection": "Stripe → Postgres"}
    assert sorted(r.body for r in receiver.records) == [f"job_b line {i}" for i in range(3)]
    assert {job_id for _, job_id, _ in outbox_store.outbox.dead_letters()} == {"job_a"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(b"[1]", "body", id="not-an-object"),
        pytest.param(b'{"connection": 7}', "connection", id="not-a-string"),
        pytest.param(b'{"connection": ""}', "connection", id="empty"),
        pytest.param(b'{"connection": null}', "connection", id="null"),
        pytest.param(b'{"connection": "a\\u0000b"}', "connection", id="nul"),
        pytest.param(b'{"since": "1d"}', "body", id="unknown-field"),
        pytest.param(b"{", "body", id="not-json"),
    ],
)
def test_a_redrive_request_the_exporter_cannot_read_is_refused_naming_the_field(
    api: FlaskClient, body: bytes, field: str
) -> None:
    answer = api.post("/api/v1/logs/dead-letters/redrive", data=body, content_type="application/json")

    assert (answer.status_code, answer.get_json()["field"]) == (400, field)


def test_the_redrive_command_queues_the_dead_letters_again(
    api: FlaskClient,
    shipper: LogShipper,
    receiver: Receiver,
    outbox_store: Store,
    shipping_config: Config,
    make_store: Callable[..., Store],
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from calabi_exporter.cli import main

    receiver.refuse_marker = "line"  # Loki explains: dead-lettered at once
    post_logs_on_two_connections(api, "2026-04-06T07:59:0")
    ship_all(shipper)
    receiver.refuse_marker = None
    assert len(outbox_store.outbox.dead_letters()) == 6
    monkeypatch.delenv("CALABI_CONFIG", raising=False)
    if backend == "postgres":
        monkeypatch.setenv("CALABI_DATABASE_URL", make_store.database_url(shipping_config.data_path))  # type: ignore[attr-defined]

    code = main(["redrive-dead-letters", "--data-dir", shipping_config.data_dir, "--connection", "Stripe → Postgres"])
    ship_all(shipper)

    assert (code, capsys.readouterr().out) == (0, "3 dead-lettered log records queued again (Stripe → Postgres)\n")
    assert sorted(r.body for r in receiver.records) == [f"job_b line {i}" for i in range(3)]
    assert {job_id for _, job_id, _ in outbox_store.outbox.dead_letters()} == {"job_a"}


def test_records_a_receiver_rejects_in_a_partial_success_are_dead_lettered_with_its_reason(
    api: FlaskClient, shipper: LogShipper, receiver: Receiver, outbox_store: Store
) -> None:
    receiver.reject_marker = "DROP-ME"

    ship_seven_lines_and(api, shipper, "DROP-ME: attribute over the limit")

    assert sorted(set(r.body for r in receiver.records)) == SEVEN_LINES
    assert [(job_id, reason) for _, job_id, reason in outbox_store.outbox.dead_letters()] == [
        ("job_1", f"rejected by the receiver (partial success): {PARTIAL}")
    ]
    stats = outbox_store.metrics.snapshot().shipping
    assert (stats.waiting, stats.exported, stats.dead_lettered) == (0, 7, 1)


@pytest.fixture
def misbehaving(request: pytest.FixtureRequest) -> Iterator[MisbehavingServer]:
    with MisbehavingServer(mode=request.param) as server:
        yield server


@pytest.mark.parametrize("misbehaving", ["huge", "trickle", "trickle-headers"], indirect=True)
def test_an_answer_too_large_or_too_slow_is_cut_short_and_the_records_wait(
    tmp_path: Path, misbehaving: MisbehavingServer, clock: FakeClock
) -> None:
    """A 200 MiB answer is not read whole; one trickled a byte every quarter second ends at the time limit."""
    config = Config(data_dir=str(tmp_path / "d"), otlp_logs_endpoint=misbehaving.url, otlp_timeout_seconds=1.0)
    store = Store.sqlite(config.data_path, clock=clock, outbox=True)
    client = create_app(config, store=store, clock=clock).test_client()
    post_job_with_logs(client)
    shipper = LogShipper(store, config, clock=clock, backoff=LogShipper.BACKOFF.without_jitter())

    wait = shipper.ship_once()

    shipper.stop()
    with misbehaving.lock:
        assert (misbehaving.requests, misbehaving.finished) == (1, 0)  # the exporter hung up before the end
    assert wait == LogShipper.BACKOFF.first
    stats = store.metrics.snapshot().shipping
    assert (stats.waiting, stats.exported, stats.failed, stats.dead_lettered) == (5, 0, 1, 0)
    store.close()
