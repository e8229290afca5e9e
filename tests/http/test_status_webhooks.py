"""Every job status change reaches each webhook endpoint once, in order, signed, and survives failures."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from calabi_exporter.backoff import Backoff
from calabi_exporter.config import Config, WebhookEndpoint, load_config
from calabi_exporter.status_webhooks import WebhookDeliverer
from calabi_exporter.store import Store
from calabi_exporter.store.records import METRICS_ROLE
from calabi_exporter.timeutil import system_clock
from calabi_exporter.web import background_workers, create_app
from calabi_exporter.web.services import services
from flask.testing import FlaskClient

from tests.support.capture_servers import MisbehavingServer, WebhookReceiver
from tests.support.clock import T0, FakeClock
from tests.support.job_documents import job_summary
from tests.support.paths import ROOT
from tests.support.samples import Samples, parse_samples
from tests.support.waiting import wait_until

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

SECRET = "whsec-0123456789abcdef"
WEBHOOKS_PAGE = ROOT / "docs" / "webhooks.md"


def readme_recipe() -> Callable[..., bool]:
    """The documentation's verification recipe (docs/webhooks.md), run as written."""
    text = WEBHOOKS_PAGE.read_text(encoding="utf-8")
    block = re.search(r"<!-- webhook-verification-recipe -->\n```python\n(.*?)```", text, re.S)
    assert block is not None, "docs/webhooks.md lost its webhook verification recipe"
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), "docs/webhooks.md", "exec"), namespace)
    verify: Callable[..., bool] = namespace["verify_calabi_signature"]
    return verify


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


class Setup:
    """A store queueing for the given endpoints, its app, and the delivery worker (driven by hand)."""

    def __init__(
        self, tmp_path: Path, endpoints: list[WebhookEndpoint], clock: Callable[[], float], database_url: str = ""
    ) -> None:
        self.config = Config(data_dir=str(tmp_path / "data"), webhooks=tuple(endpoints), database_url=database_url)
        self.store = Store.from_config(self.config, clock=clock)
        if database_url:  # the only replica: it shows the store's metrics
            assert self.store.role_lock(METRICS_ROLE).acquire()
        self.client: FlaskClient = create_app(self.config, store=self.store, clock=clock).test_client()
        self.deliverer = WebhookDeliverer(
            self.store, self.config, clock=clock, backoff=Backoff(first=0.05, cap=3600.0).without_jitter()
        )

    def post(self, *records: dict[str, Any]) -> None:
        response = self.client.post("/api/v1/jobs", json=list(records))
        assert response.status_code == 200, response.get_json()

    def drain(self, *, timeout: float = 15) -> None:
        """Deliver until the queue is empty (retries included)."""
        wait_until(
            lambda: (self.deliverer.deliver_once() or True) and self.depth() == 0,
            timeout=timeout,
            what="the webhook queue to empty",
            interval=0.02,
        )

    def depth(self) -> int:
        return sum(self.store.metrics.snapshot().webhook_depth.values())

    def metrics(self) -> Samples:
        return parse_samples(self.client.get("/metrics").get_data(as_text=True))

    def deliveries(self) -> dict[str, float]:
        """The ``ops`` endpoint's deliveries by outcome, as the scrape counts them."""
        family = self.metrics().family("calabi_exporter_webhook_deliveries_total")
        return {dict(labels)["outcome"]: value for labels, value in family.items() if ("endpoint", "ops") in labels}

    def close(self) -> None:
        self.deliverer.close()
        self.store.close()


@pytest.fixture
def make_setup(tmp_path: Path, backend: str, make_store: Callable[..., Store]) -> Callable[..., Setup]:
    """``make_setup(endpoints, clock)``: a :class:`Setup` on the test's backend (one store per test)."""

    def make_setup(endpoints: list[WebhookEndpoint], clock: Callable[[], float]) -> Setup:
        url = make_store.database_url(tmp_path / "data") if backend == "postgres" else ""
        return Setup(tmp_path, endpoints, clock, database_url=url)

    return make_setup


@pytest.fixture
def setup(make_setup: Callable[..., Setup], receiver: WebhookReceiver) -> Iterator[Setup]:
    built = make_setup([WebhookEndpoint("ops", receiver.url, SECRET)], system_clock)
    yield built
    built.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clocked(make_setup: Callable[..., Setup], receiver: WebhookReceiver, clock: FakeClock) -> Iterator[Setup]:
    """The ``ops`` endpoint's setup on a clock the test moves by hand."""
    built = make_setup([WebhookEndpoint("ops", receiver.url, SECRET)], clock)
    yield built
    built.close()


def record(job_id: str, status: str, connection: str = "Salesforce → Snowflake", **fields: Any) -> dict[str, Any]:
    return {"job_id": job_id, "connection_name": connection, "status": status, **fields}


def transitions(bodies: list[dict[str, Any]]) -> dict[str, list[tuple[str | None, str]]]:
    seen: dict[str, list[tuple[str | None, str]]] = {}
    for body in bodies:
        seen.setdefault(body["job_id"], []).append((body["previous_status"], body["status"]))
    return seen


def test_every_transition_arrives_once_in_order_with_a_signature_the_readme_recipe_verifies(
    setup: Setup, receiver: WebhookReceiver
) -> None:
    setup.post(record("j1", "pending", created_at="2026-04-06T07:59:00Z"))
    setup.post(record("j1", "running", started_at="2026-04-06T08:00:01Z"), record("j2", "running"))
    setup.post(record("j1", "running", started_at="2026-04-06T08:00:01Z"))  # sent again: no change
    j2_failed = record(
        "j2",
        "failed",
        started_at="2026-04-06T08:00:01Z",
        failed_at="2026-04-06T08:03:17Z",
        records_synced=0,
        error_summary="Stream Account: 401 Unauthorized — token expired",
        job_url="https://app.calabi.io/connect/jobs/j2",
    )
    setup.post(
        j2_failed,
        record("j1", "succeeded", finished_at="2026-04-06T08:10:00Z", records_synced=4218, bytes_synced=1000),
        record("j3", "cancelled", connection="Stripe → Postgres"),
    )

    setup.drain()

    verify = readme_recipe()
    bodies = receiver.bodies()
    assert transitions(bodies) == {
        "j1": [(None, "pending"), ("pending", "running"), ("running", "succeeded")],
        "j2": [(None, "running"), ("running", "failed")],
        "j3": [(None, "cancelled")],
    }
    assert len({b["event_id"] for b in bodies}) == 6
    failed = next(b for b in bodies if b["status"] == "failed")
    assert {k: v for k, v in failed.items() if k not in ("event_id", "timestamp")} == job_summary(
        j2_failed,
        event_type="job.status_changed",
        previous_status="running",
        finished_at="2026-04-06T08:03:17Z",  # a failed job finished when it failed
        duration_seconds=196.0,
    )
    assert re.fullmatch(r"[0-9a-f]{32}", failed["event_id"])
    for headers, raw in receiver.requests:
        assert verify(SECRET.encode(), headers["Calabi-Signature"], raw)
        assert headers["Calabi-Event-Id"] == json.loads(raw)["event_id"]
        assert headers["Content-Type"] == "application/json"
    headers, raw = receiver.requests[0]
    signed_at = int(headers["Calabi-Signature"].split(",")[0].removeprefix("t="))
    tampered = raw.replace(b'"pending"', b'"succeeded"')
    assert tampered != raw and not verify(SECRET.encode(), headers["Calabi-Signature"], tampered)
    assert not verify(b"another-secret-of-16+", headers["Calabi-Signature"], raw)
    assert verify(SECRET.encode(), headers["Calabi-Signature"], raw, now=signed_at + 300)
    assert not verify(SECRET.encode(), headers["Calabi-Signature"], raw, now=signed_at + 301)
    assert setup.deliveries() == {"delivered": 6, "failed": 0, "dead_lettered": 0}
    assert setup.metrics().value("calabi_exporter_webhook_queue_depth", endpoint="ops") == 0


def test_endpoint_filters_keep_only_their_statuses_and_connections(
    make_setup: Callable[..., Setup], tmp_path: Path
) -> None:
    failures, stripe = WebhookReceiver(), WebhookReceiver()
    failures.start()
    stripe.start()
    built = make_setup(
        [
            WebhookEndpoint("failures", failures.url, SECRET, statuses=frozenset({"failed"})),
            WebhookEndpoint("stripe", stripe.url, SECRET, connections=frozenset({"Stripe → Postgres"})),
        ],
        system_clock,
    )
    built.post(record("s1", "running"), record("s2", "running", connection="Stripe → Postgres"))
    built.post(record("s1", "failed"), record("s2", "failed", connection="Stripe → Postgres"))

    built.drain()

    assert [(b["job_id"], b["status"]) for b in failures.bodies()] == [("s1", "failed"), ("s2", "failed")]
    assert [(b["job_id"], b["status"]) for b in stripe.bodies()] == [("s2", "running"), ("s2", "failed")]
    built.close()
    failures.stop()
    stripe.stop()


def test_with_the_receiver_down_nothing_is_lost_and_deliveries_resume(setup: Setup, receiver: WebhookReceiver) -> None:
    receiver.stop()
    for n in range(5):
        setup.post(record(f"d{n}", "running"))
        setup.post(record(f"d{n}", "succeeded"))

    attempts_while_down = [setup.deliverer.deliver_once(), setup.deliverer.deliver_once()]
    down = setup.metrics()
    receiver.start()
    setup.drain()

    # One request found the endpoint down; the other events wait for the same retry.
    assert attempts_while_down == [1, 0]
    assert down.value("calabi_exporter_webhook_queue_depth", endpoint="ops") == 10
    assert down.value("calabi_exporter_webhook_deliveries_total", endpoint="ops", outcome="failed") == 1
    assert transitions(receiver.bodies()) == {f"d{n}": [(None, "running"), ("running", "succeeded")] for n in range(5)}
    after = setup.metrics()
    assert after.value("calabi_exporter_webhook_deliveries_total", endpoint="ops", outcome="delivered") == 10
    assert after.value("calabi_exporter_webhook_queue_depth", endpoint="ops") == 0


def test_a_500_is_retried_and_the_same_event_then_delivered(setup: Setup, receiver: WebhookReceiver) -> None:
    receiver.answers = [500]
    setup.post(record("r1", "failed"))

    setup.drain()

    bodies = receiver.bodies()
    assert [(b["job_id"], b["status"]) for b in bodies] == [("r1", "failed"), ("r1", "failed")]
    assert bodies[0]["event_id"] == bodies[1]["event_id"]
    assert setup.deliveries() == {"delivered": 1, "failed": 1, "dead_lettered": 0}


def test_while_an_event_is_retried_the_jobs_later_events_and_the_endpoints_new_ones_wait(
    clocked: Setup, clock: FakeClock, receiver: WebhookReceiver
) -> None:
    receiver.answers = [500]
    clocked.post(record("o1", "running"))
    clocked.deliverer.deliver_once()  # 500: the running event waits for its retry
    clocked.post(record("o1", "succeeded"), record("o2", "running"))

    before_retry = clocked.deliverer.deliver_once()
    clock.advance(1)
    clocked.drain()

    # The endpoint is in backoff: nothing goes before the retry; then o1's events in order.
    assert before_retry == 0
    assert [(b["job_id"], b["status"]) for b in receiver.bodies()] == [
        ("o1", "running"),
        ("o1", "running"),
        ("o2", "running"),
        ("o1", "succeeded"),
    ]


def test_a_410_is_dead_lettered_without_retry_and_the_jobs_next_event_follows(
    setup: Setup, receiver: WebhookReceiver
) -> None:
    receiver.answers = [410]
    setup.post(record("g1", "running"))
    setup.post(record("g1", "succeeded"))

    setup.drain()

    assert [(b["job_id"], b["status"]) for b in receiver.bodies()] == [("g1", "running"), ("g1", "succeeded")]
    letters = setup.client.get("/api/v1/webhooks/dead-letters").get_json()["dead_letters"]
    assert [(d["endpoint"], d["job_id"], d["reason"], d["attempts"]) for d in letters] == [("ops", "g1", "HTTP 410", 0)]
    assert letters[0]["payload"]["status"] == "running"
    assert setup.deliveries() == {"delivered": 1, "failed": 0, "dead_lettered": 1}


def test_429_waits_for_retry_after_and_events_failing_for_24_hours_are_dead_lettered(
    clocked: Setup, clock: FakeClock, receiver: WebhookReceiver
) -> None:
    receiver.answers = [(429, {"Retry-After": "120"}), (503, {"Retry-After": "0"}), *([503] * 100)]
    clocked.post(record("t1", "failed"))

    clocked.deliverer.deliver_once()  # 429 with Retry-After: 120
    clock.advance(119)
    early = clocked.deliverer.deliver_once()
    clock.advance(1)
    retried = clocked.deliverer.deliver_once()  # 503 with Retry-After: 0: still the first backoff
    right_away = clocked.deliverer.deliver_once()
    clock.advance(0.05)
    after_backoff = clocked.deliverer.deliver_once()
    attempts = 3
    while clocked.depth() and attempts < 60:
        clock.advance(3600)
        attempts += clocked.deliverer.deliver_once()

    assert (early, retried, right_away, after_backoff) == (0, 1, 0, 1)
    letters = clocked.store.status_webhooks.dead_letters()
    assert [(d.job_id, reason) for d, reason in letters] == [("t1", "undelivered after 24 hours: HTTP 503")]
    assert 24 * 3600 <= clock() - T0 <= 25 * 3600  # the last try came at the 24-hour mark, not before
    assert clocked.deliveries()["dead_lettered"] == 1


def test_after_a_day_down_the_expired_events_are_dead_lettered_with_one_request(
    clocked: Setup, clock: FakeClock, receiver: WebhookReceiver
) -> None:
    receiver.stop()
    clocked.post(*(record(f"x{n}", "failed") for n in range(5)))
    first = clocked.deliverer.deliver_once()

    clock.advance(25 * 3600)
    after_a_day = clocked.deliverer.deliver_once()

    letters = clocked.store.status_webhooks.dead_letters()
    assert (first, after_a_day, clocked.depth()) == (1, 1, 0)
    assert [d.job_id for d, _ in letters] == [f"x{n}" for n in range(5)]
    assert all(reason.startswith("undelivered after 24 hours: ConnectionError") for _, reason in letters)


def test_a_redirect_is_dead_lettered_with_its_location(setup: Setup, receiver: WebhookReceiver) -> None:
    receiver.answers = [(308, {"Location": "https://hooks.example.com/calabi"})]
    setup.post(record("m1", "failed"))

    setup.drain()

    assert [reason for _, reason in setup.store.status_webhooks.dead_letters()] == [
        "HTTP 308 redirect to https://hooks.example.com/calabi: configure the final URL"
    ]


def test_events_of_an_endpoint_removed_from_the_configuration_are_dead_lettered(
    make_setup: Callable[..., Setup], tmp_path: Path, receiver: WebhookReceiver
) -> None:
    old = make_setup(
        [WebhookEndpoint("ops", receiver.url, SECRET), WebhookEndpoint("old", receiver.url, SECRET)],
        system_clock,
    )
    old.post(record("r1", "running"))
    old.close()
    new = make_setup([WebhookEndpoint("ops", receiver.url, SECRET)], system_clock)

    new.deliverer.step()  # dead-letters the orphans, then hands "ops" its event in the background
    wait_until(lambda: new.depth() == 0, timeout=10, what="the ops event to be delivered")

    assert [(d.endpoint, reason) for d, reason in new.store.status_webhooks.dead_letters()] == [
        ("old", "endpoint no longer configured")
    ]
    assert [(b["job_id"], b["status"]) for b in receiver.bodies()] == [("r1", "running")]
    new.close()


def test_a_slow_endpoint_does_not_hold_back_another(tmp_path: Path, receiver: WebhookReceiver) -> None:
    fast = WebhookReceiver()
    fast.start()
    config = Config(
        data_dir=str(tmp_path / "live"),
        webhooks=(WebhookEndpoint("slow", receiver.url, SECRET), WebhookEndpoint("fast", fast.url, SECRET)),
    )
    app = create_app(config)  # owns its store: it has a delivery worker
    client = app.test_client()
    workers = background_workers(app)
    assert workers is not None
    workers.start()
    receiver.hold.clear()  # the slow endpoint keeps its first request waiting

    client.post("/api/v1/jobs", json=record("s1", "running"))
    wait_until(lambda: len(receiver.requests) == 1, timeout=10, what="the slow endpoint's first request")
    client.post("/api/v1/jobs", json=record("s2", "running"))
    wait_until(lambda: len(fast.requests) == 2, timeout=10, what="both events at the fast endpoint")
    slow_meanwhile = len(receiver.requests)
    receiver.hold.set()
    wait_until(lambda: len(receiver.requests) == 2, timeout=10, what="the slow endpoint's second event")

    assert slow_meanwhile == 1
    assert [b["job_id"] for b in fast.bodies()] == ["s1", "s2"]
    workers.stop()
    fast.stop()


def test_ingestion_goes_on_while_an_endpoint_holds_a_delivery(tmp_path: Path, receiver: WebhookReceiver) -> None:
    config = Config(data_dir=str(tmp_path / "live"), webhooks=(WebhookEndpoint("ops", receiver.url, SECRET),))
    app = create_app(config)  # owns its store: it has a delivery worker
    client = app.test_client()
    workers = background_workers(app)
    assert workers is not None
    workers.start()
    receiver.hold.clear()  # the receiver keeps the first request waiting
    client.post("/api/v1/jobs", json=record("h0", "running"))
    wait_until(lambda: len(receiver.requests) == 1, timeout=10, what="the first delivery to start")

    answers = [client.post("/api/v1/jobs", json=record(f"h{n}", "succeeded")).status_code for n in range(1, 21)]
    stored = [services(app).store.reads.job(f"h{n}") is not None for n in range(1, 21)]
    held = len(receiver.requests)
    receiver.hold.set()
    wait_until(lambda: len(receiver.requests) == 21, timeout=15, what="every event after the endpoint answered")

    assert answers == [200] * 20
    assert held == 1 and stored == [True] * 20
    workers.stop()


def test_webhook_configuration_errors_name_the_key(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    cases = {
        "webhooks: {}": "webhooks: must be a list of endpoints",
        "webhooks: [{url: 'http://x'}]": "webhooks[0].name: is required",
        "webhooks: [{name: a, url: 'ftp://x', secret: " + SECRET + "}]": (
            "webhooks[0].url: must be an http:// or https:// URL with a valid host (got 'ftp://x')"
        ),
        "webhooks: [{name: a, url: 'http://x'}]": "webhooks[0].secret_file: give exactly one of secret_file and secret",
        "webhooks: [{name: a, url: 'http://x', secret: short}]": (
            "webhooks[0].secret: the secret must be at least 16 characters"
        ),
        "webhooks: [{name: a, url: 'http://x', secret_file: missing}]": (
            f"webhooks[0].secret_file: cannot read {tmp_path / 'missing'}: No such file or directory"
        ),
        "webhooks: [{name: a, url: 'http://x', secret_file: secret, statuses: [done]}]": (
            "webhooks[0].statuses: unknown status 'done'; use pending, running, succeeded, failed, cancelled"
        ),
        "webhooks: [{name: a, url: 'http://x', secret_file: secret},"
        " {name: a, url: 'http://y', secret_file: secret}]": ("webhooks[1].name: 'a' is used twice"),
        "webhooks: [{name: a, url: 'http://x', secret_file: secret, retries: 3}]": "webhooks[0].retries: unknown key",
    }
    messages = {}
    for text, _ in cases.items():
        path = tmp_path / "c.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path, env={})
        except ValueError as error:
            messages[text] = str(error)
    good = tmp_path / "good.yaml"
    good.write_text("webhooks: [{name: a, url: 'http://x', secret_file: secret, statuses: [failed]}]", encoding="utf-8")

    assert messages == cases
    assert load_config(good, env={}).webhooks == (
        WebhookEndpoint("a", "http://x", SECRET, frozenset({"failed"}), secret_file=str(secret_file)),
    )


@pytest.fixture
def misbehaving(request: pytest.FixtureRequest) -> Iterator[MisbehavingServer]:
    server = MisbehavingServer(mode=request.param, status=500)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("misbehaving", ["huge", "trickle", "trickle-headers"], indirect=True)
def test_an_answer_too_large_or_too_slow_is_cut_short_and_the_event_retried(
    make_setup: Callable[..., Setup], misbehaving: MisbehavingServer
) -> None:
    """A 200 MiB answer is not read whole; one trickled a byte every quarter second ends at the time limit."""
    built = make_setup([WebhookEndpoint("ops", misbehaving.url, SECRET, timeout_seconds=1.0)], system_clock)
    built.post(record("r1", "failed"))

    attempts = built.deliverer.deliver_once()

    with misbehaving.lock:
        assert (attempts, misbehaving.requests, misbehaving.finished) == (1, 1, 0)  # hung up before the end
    assert built.depth() == 1
    assert built.deliveries()["failed"] == 1
    built.close()
