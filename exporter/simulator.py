"""A built-in simulator of Calabi Connect, posting jobs through the real HTTP API.

It backfills a day of history for a few realistic connections, then keeps jobs
moving live: pending → running → succeeded | failed | cancelled, with their
streams, their log lines and, for failures, the product's webhook. Two
connections tell what detection sees: one went quiet hours ago (overdue on
its learned hourly schedule), one keeps succeeding with a hundredth of its
usual rows (a volume drop). Everything
it posts is a function of the seed and the start time, so a seed always tells
the same story.
"""

from __future__ import annotations

import logging
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import requests

from .config import ConfigError
from .timeutil import Clock, format_rfc3339, system_clock

log = logging.getLogger(__name__)

JOB_URL: Final = "https://app.calabi.io/connect/jobs/{job_id}"
_ID_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, as in the product's ids


@dataclass(frozen=True, slots=True)
class ConnectionSpec:
    """One simulated pipeline and how it tends to behave."""

    name: str
    connection_id: str
    source: str
    destination: str
    streams: tuple[str, ...]
    every_seconds: float  # schedule in the backfill
    rows: tuple[int, int]  # rows per stream
    fail_rate: float = 0.05
    cancel_rate: float = 0.02
    rate_limited: float = 0.0  # share of jobs that log the API rate-limit warning
    auth_broken_for: int = 0  # the latest N backfilled jobs fail on an expired token, and live jobs keep failing
    schema_drift: float = 0.0  # share of jobs with rows rejected on a schema mismatch
    live_every: float = 8.0  # seconds between live jobs
    live_seconds: float = 4.0  # how long a live job runs
    quiet_for: float = 0.0  # its history ends this long before now, and it runs no live jobs
    volume: float = 1.0  # share of the usual rows its newest backfilled job and its live jobs move


CONNECTIONS: Final = (
    ConnectionSpec(
        name="Salesforce → Snowflake",
        connection_id="conn_01HX3SFSNOW",
        source="Salesforce",
        destination="Snowflake",
        streams=(
            "Account",
            "Contact",
            "Opportunity",
            "Lead",
            "Case",
            "Campaign",
            "User",
            "Task",
            "Event",
            "OpportunityLineItem",
            "Product2",
            "Pricebook2",
            "Contract",
            "Order",
        ),
        every_seconds=3600,
        rows=(200, 1800),
        fail_rate=0.06,
        rate_limited=0.3,
        schema_drift=0.1,
        live_every=7.0,
    ),
    ConnectionSpec(
        name="HubSpot Production → BigQuery",
        connection_id="conn_01HX3HSBQ01",
        source="HubSpot Production",
        destination="BigQuery",
        streams=("contacts", "companies", "deals", "tickets", "engagements", "owners"),
        every_seconds=3600,
        rows=(50, 900),
        auth_broken_for=3,
        live_every=11.0,
    ),
    ConnectionSpec(
        name="Stripe → Postgres",
        connection_id="conn_01HX3STRPG0",
        source="Stripe",
        destination="Postgres",
        streams=("charges", "customers", "invoices", "subscriptions", "refunds", "payouts", "balance_transactions"),
        every_seconds=1800,
        rows=(100, 2500),
        fail_rate=0.04,
        cancel_rate=0.06,
        live_every=9.0,
        live_seconds=20.0,
    ),
    ConnectionSpec(
        name="Zendesk Support → Snowflake",
        connection_id="conn_01HX3ZDSNOW",
        source="Zendesk Support",
        destination="Snowflake",
        streams=("tickets", "users", "organizations", "ticket_comments", "satisfaction_ratings"),
        every_seconds=7200,
        rows=(20, 600),
        schema_drift=0.25,
        live_every=13.0,
    ),
    ConnectionSpec(
        name="Shopify → Snowflake",
        connection_id="conn_01HX3SHSNOW",
        source="Shopify",
        destination="Snowflake",
        streams=("orders", "customers", "products", "inventory_levels"),
        every_seconds=3600,
        rows=(300, 700),
        fail_rate=0.0,
        cancel_rate=0.0,
        quiet_for=3 * 3600,
    ),
    ConnectionSpec(
        name="Jira → Databricks",
        connection_id="conn_01HX3JIRADB",
        source="Jira",
        destination="Databricks",
        streams=("issues", "projects", "users", "sprints", "worklogs"),
        every_seconds=3600,
        rows=(800, 1200),
        fail_rate=0.0,
        cancel_rate=0.0,
        volume=0.01,
        live_every=1800.0,  # its newest job stays the one that dropped, long enough to see
    ),
)


@dataclass(slots=True)
class SimJob:
    """A job the simulator has made up: its record and its log lines."""

    record: dict[str, Any]
    logs: list[str] = field(default_factory=list)


def _job_id(rng: random.Random) -> str:
    return "job_" + "".join(rng.choice(_ID_ALPHABET) for _ in range(12))


def make_job(
    spec: ConnectionSpec,
    rng: random.Random,
    *,
    started_at: float,
    duration: float,
    outcome: str,
    drift: bool | None = None,
    volume: float = 1.0,
) -> SimJob:
    """A finished job of ``spec`` with streams, totals and product-format log lines; ``volume`` scales its rows."""
    job_id = _job_id(rng)
    streams: list[dict[str, Any]] = []
    logs: list[str] = []
    at = started_at
    step = duration / max(1, len(spec.streams))
    # An expired token fails the first stream the connector opens.
    failing_stream = 0 if spec.auth_broken_for else rng.randrange(len(spec.streams))
    error_summary: str | None = None
    if drift is None:
        drift = rng.random() < spec.schema_drift
    if rng.random() < spec.rate_limited:
        logs.append(f"{format_rfc3339(at)} WARN {spec.source} API rate limit at 85% — throttling requests")
        logs.append(f"{format_rfc3339(at)} INFO Retrying after 30s backoff")
    logs.append(f"{format_rfc3339(at)} DEBUG Connector config loaded: {len(spec.streams)} streams selected")
    for index, name in enumerate(spec.streams):
        if outcome == "cancelled" and index >= failing_stream:
            break
        rows = round(rng.randint(*spec.rows) * volume)
        rejected = rng.randint(1, 40) if drift and index == failing_stream and outcome != "failed" else 0
        status = "succeeded"
        error = None
        logs.append(f"{format_rfc3339(at)} INFO Syncing stream: {name}")
        if outcome == "failed" and index == failing_stream:
            status = "failed"
            if spec.auth_broken_for:
                error = f"Stream {name}: 401 Unauthorized — token expired"
                logs.append(f'{format_rfc3339(at)} ERROR Failed to refresh OAuth token for source "{spec.source}"')
                logs.append(f'{format_rfc3339(at)} ERROR Response 401: {{"error": "invalid_token"}}')
                rows = 0
            else:
                error = f"Stream {name}: schema mismatch — column amount changed from NUMBER to VARCHAR"
                logs.append(f"{format_rfc3339(at)} ERROR {error}")
                rows //= 3
        elif rejected:
            reason = "type error in column custom_field__c"
            logs.append(f"{format_rfc3339(at)} WARN Stream {name}: {rejected} records rejected: {reason}")
        at += step
        if status == "succeeded":
            logs.append(f"{format_rfc3339(at)} INFO Stream {name}: {rows:,} records synced in {step:.1f}s")
            logs.append(f"{format_rfc3339(at)} INFO Stream {name}: complete")
        if error and error_summary is None:
            error_summary = error
        streams.append(
            {
                "name": name,
                "status": status,
                "records_synced": rows,
                "records_failed": rejected,
                "bytes_synced": rows * rng.randint(180, 420),
                "duration_seconds": round(step, 3),
                "error": error,
            }
        )
    finished_at = started_at + duration
    if outcome == "cancelled":
        logs.append(f"{format_rfc3339(finished_at)} WARN Sync cancelled by user")
    logs.append(f"{format_rfc3339(finished_at)} INFO Sync {outcome}")
    record: dict[str, Any] = {
        "job_id": job_id,
        "connection_name": spec.name,
        "connection_id": spec.connection_id,
        "source": spec.source,
        "destination": spec.destination,
        "job_type": "sync",
        "attempt": 1,
        "status": outcome,
        "created_at": format_rfc3339(started_at - rng.uniform(0.5, 5.0)),
        "started_at": format_rfc3339(started_at),
        "finished_at": format_rfc3339(finished_at),
        "error_summary": error_summary,
        "job_url": JOB_URL.format(job_id=job_id),
        "streams": streams,
    }
    return SimJob(record, logs)


def _outcome(spec: ConnectionSpec, rng: random.Random, broken: bool) -> str:
    if broken:
        return "failed"
    roll = rng.random()
    if roll < spec.fail_rate:
        return "failed"
    if roll < spec.fail_rate + spec.cancel_rate:
        return "cancelled"
    return "succeeded"


def backfill(specs: tuple[ConnectionSpec, ...], rng: random.Random, *, now: float, hours: float = 24) -> list[SimJob]:
    """A day of finished history for every connection, oldest first."""
    jobs: list[SimJob] = []
    for spec in specs:
        count = int((hours * 3600 - spec.quiet_for) // spec.every_seconds)
        for n in range(count):
            started = now - spec.quiet_for - (count - n) * spec.every_seconds + rng.uniform(0, 60)
            broken = spec.auth_broken_for > 0 and n >= count - spec.auth_broken_for
            duration = rng.uniform(40, 240) if not broken else rng.uniform(5, 30)
            outcome = _outcome(spec, rng, broken)
            # The latest job of a drifting connection shows its rejected rows.
            drift = True if spec.schema_drift and n == count - 1 else None
            # So does the latest job of a connection whose volume dropped.
            volume = spec.volume if n == count - 1 else 1.0
            if drift or volume != 1.0:
                outcome = "succeeded"
            jobs.append(
                make_job(spec, rng, started_at=started, duration=duration, outcome=outcome, drift=drift, volume=volume)
            )
    jobs.sort(key=lambda j: j.record["started_at"])
    return jobs


class Simulator:
    """Posts simulated jobs to an exporter at ``base_url``."""

    def __init__(
        self,
        base_url: str,
        *,
        seed: int,
        session: requests.Session | None = None,
        clock: Clock = system_clock,
        token: str | None = None,
        specs: tuple[ConnectionSpec, ...] = CONNECTIONS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.rng = random.Random(seed)
        self.session = session or requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.clock = clock
        self.specs = specs
        self._live: list[tuple[float, Callable[[], None]]] = []

    def _post(self, path: str, **kwargs: Any) -> None:
        response = self.session.post(self.base_url + path, timeout=30, **kwargs)
        if response.status_code == 401:  # every later post would be refused too: stop, saying why
            given = "a token the exporter refused" if self.session.headers.get("Authorization") else "no token"
            raise ConfigError("--token", f"{self.base_url} needs an ingest token and was given {given} (HTTP 401)")
        if response.status_code >= 400:
            log.warning("POST %s answered %s: %s", path, response.status_code, response.text[:300])

    def post_job(self, job: SimJob) -> None:
        self._post("/api/v1/jobs", json=job.record)
        self._post_logs(job)

    def _post_logs(self, job: SimJob) -> None:
        if job.logs:
            self._post(
                f"/api/v1/jobs/{job.record['job_id']}/logs",
                data="\n".join(job.logs).encode(),
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )

    def post_backfill(self, hours: float = 24) -> int:
        """Post the history as the product uploads it: job records in batches of 100, then each job's log."""
        jobs = backfill(self.specs, self.rng, now=self.clock(), hours=hours)
        for start in range(0, len(jobs), 100):
            self._post("/api/v1/jobs", json={"jobs": [j.record for j in jobs[start : start + 100]]})
        for job in jobs:
            self._post_logs(job)
        return len(jobs)

    def start_live(self) -> None:
        """Queue every connection's first live job, staggered, plus one long-queued job."""
        now = self.clock()
        for index, spec in enumerate(self.specs):
            if not spec.quiet_for:
                self._schedule(now + index * 1.5, spec)
        # A job that waits for a worker slot for the whole demo.
        queued = self.specs[-1]
        self._post(
            "/api/v1/jobs",
            json={
                "job_id": _job_id(self.rng),
                "connection_name": queued.name,
                "connection_id": queued.connection_id,
                "status": "pending",
                "created_at": format_rfc3339(now),
            },
        )

    def _schedule(self, at: float, spec: ConnectionSpec) -> None:
        self._live.append((at, lambda: self._live_job(spec)))

    def _live_job(self, spec: ConnectionSpec) -> None:
        now = self.clock()
        broken = spec.auth_broken_for > 0
        outcome = _outcome(spec, self.rng, broken)
        job = make_job(spec, self.rng, started_at=now, duration=spec.live_seconds, outcome=outcome, volume=spec.volume)
        record = job.record
        base = {k: record[k] for k in ("job_id", "connection_name", "connection_id", "source", "destination")}
        self._post("/api/v1/jobs", json={**base, "status": "pending", "created_at": format_rfc3339(now)})
        started = now + 0.5

        def run() -> None:
            self._post("/api/v1/jobs", json={**base, "status": "running", "started_at": format_rfc3339(started)})

        def finish() -> None:
            if record["status"] == "failed":
                # The product's webhook arrives first; the full record follows.
                self._post(
                    "/webhooks/calabi",
                    json={
                        "connection_name": spec.name,
                        "job_id": record["job_id"],
                        "status": "failed",
                        "started_at": format_rfc3339(started),
                        "failed_at": record["finished_at"],
                        "error_summary": record["error_summary"],
                        "job_url": record["job_url"],
                    },
                )
            self.post_job(SimJob({**record, "started_at": format_rfc3339(started)}, job.logs))

        self._live.append((started, run))
        self._live.append((now + spec.live_seconds, finish))
        self._schedule(now + spec.live_every, spec)

    def run_due(self) -> None:
        """Run every live step whose time has come."""
        now = self.clock()
        due = sorted((entry for entry in self._live if entry[0] <= now), key=lambda e: e[0])
        self._live = [entry for entry in self._live if entry[0] > now]
        for _, action in due:
            action()


def wait_ready(base_url: str, *, timeout: float = 60.0, server: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until the exporter answers ``/readyz`` (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the exporter exited with code {server.returncode}")
        try:
            if requests.get(base_url + "/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the exporter at {base_url} was not ready within {timeout:.0f}s")


def run_simulator(
    base_url: str,
    *,
    seed: int,
    duration: float | None,
    token: str | None = None,
    server: subprocess.Popen[bytes] | None = None,
) -> None:
    """Backfill, then post live jobs until ``duration`` is over (or forever)."""
    wait_ready(base_url, server=server)
    simulator = Simulator(base_url, seed=seed, token=token)
    count = simulator.post_backfill()
    log.info("simulator: posted %d jobs of history to %s", count, base_url)
    simulator.start_live()
    deadline = None if duration is None else time.monotonic() + duration
    while deadline is None or time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the exporter exited with code {server.returncode}")
        try:
            simulator.run_due()
        except requests.RequestException as error:
            log.warning("simulator: %s", error)
        time.sleep(0.25)
