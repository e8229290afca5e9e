"""Finished jobs and their log lines are exported to a real S3-compatible server, and purged only after."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from calabi_exporter.config import Config
from calabi_exporter.joblogs import LogLine
from calabi_exporter.model import parse_job
from calabi_exporter.purger import Purger
from calabi_exporter.s3export import S3Exporter
from calabi_exporter.store import Store
from calabi_exporter.web import create_app

from tests.support.clock import T0, FakeClock
from tests.support.job_documents import job_summary, stream_summary
from tests.support.s3_server import BUCKET, MotoServer
from tests.support.samples import parse_samples

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

DAY = 86400.0
HOUR = 3600.0
PREFIX = "archive/calabi"


def export_config(tmp_path: Path, s3: MotoServer, **overrides: object) -> Config:
    values: dict[str, object] = {
        "data_dir": str(tmp_path / "data"),
        "s3_export_bucket": BUCKET,
        "s3_export_prefix": PREFIX,
        "s3_export_endpoint_url": s3.url,
        "s3_export_addressing_style": "path",
    }
    values.update(overrides)
    return Config(**values)  # type: ignore[arg-type]


@dataclass
class Archive:
    """A store filled with the data set below, exporting to the moto server."""

    config: Config
    store: Store
    exporter: S3Exporter


@pytest.fixture
def archive(
    tmp_path: Path, s3: MotoServer, clock: FakeClock, make_store: Callable[..., Store], backend: str
) -> Iterator[Archive]:
    config = export_config(tmp_path, s3, retention_days=30)
    if backend == "postgres":  # the export command reads the same database
        config = dataclasses.replace(config, database_url=make_store.database_url(config.data_path))
    store = make_store(config.data_path, clock=clock, s3_export=True)
    fill(store)
    yield Archive(config, store, S3Exporter(store, config, clock=clock, backoff=S3Exporter.BACKOFF.without_jitter()))
    store.close()


def at(text: str) -> str:
    return f"2026-04-{text}Z"


#: The first job exported: two streams, one hour on 4 April.
A1 = {
    "job_id": "a1",
    "connection_name": "Salesforce → Snowflake",
    "status": "succeeded",
    "started_at": at("04T10:00:00"),
    "finished_at": at("04T10:15:00"),
    "streams": [
        {"name": "Account", "status": "succeeded", "records_synced": 4218, "bytes_synced": 1000},
        {"name": "Contact", "status": "succeeded", "records_synced": 100, "bytes_synced": 50},
    ],
    "job_url": "https://app.calabi.example/jobs/a1",
}


def fill(store: Store) -> None:
    """Two jobs finished on 4 April in one hour, one late on 5 April, one running, one just finished."""
    records = [
        A1,
        {
            "job_id": "a2",
            "connection_name": "Stripe → Postgres",
            "status": "failed",
            "started_at": at("04T10:30:00"),
            "failed_at": at("04T10:40:00"),
            "error_summary": "401 Unauthorized",
        },
        {
            "job_id": "b1",
            "connection_name": "Stripe → Postgres",
            "status": "succeeded",
            "finished_at": at("05T23:59:30"),
        },
        {"job_id": "c1", "connection_name": "Stripe → Postgres", "status": "running", "started_at": at("06T07:00:00")},
        {
            "job_id": "d1",
            "connection_name": "Stripe → Postgres",
            "status": "succeeded",
            "finished_at": at("06T07:58:00"),
        },
    ]
    store.ingest.jobs([parse_job(r) for r in records], endpoint="jobs")
    store.ingest.logs(
        "a1",
        [
            LogLine("INFO", "Syncing stream: Account", T0 - 2 * DAY + 7200 + 3, "Account"),
            LogLine("WARN", "Salesforce API rate limit at 85% — throttling requests", T0 - 2 * DAY + 7200 + 4),
            LogLine("INFO", "Stream Account: 4,218 records synced in 18.2s", None, "Account"),
        ],
    )
    store.ingest.logs("a2", [LogLine("ERROR", "401 Unauthorized: token expired", T0 - 2 * DAY + 9590)])
    store.ingest.logs("b1", [LogLine("INFO", "Sync complete", T0 - 30)])


def batch_name(window: str, *job_ids: str) -> str:
    return f"{window}-{hashlib.sha256(chr(10).join(sorted(job_ids)).encode()).hexdigest()[:16]}"


def test_finished_jobs_and_their_lines_are_exported_by_finish_day_with_deterministic_keys(
    archive: Archive, s3: MotoServer
) -> None:
    exported = archive.exporter.export_once()

    first, second = batch_name("20260404T100000Z", "a1", "a2"), batch_name("20260405T230000Z", "b1")
    assert exported == 2
    assert sorted(s3.objects()) == [
        f"{PREFIX}/jobs/dt=2026-04-04/{first}.ndjson.gz",
        f"{PREFIX}/jobs/dt=2026-04-05/{second}.ndjson.gz",
        f"{PREFIX}/logs/dt=2026-04-04/{first}.ndjson.gz",
        f"{PREFIX}/logs/dt=2026-04-05/{second}.ndjson.gz",
    ]
    jobs = s3.ndjson(f"{PREFIX}/jobs/dt=2026-04-04/{first}.ndjson.gz")
    assert [j["job_id"] for j in jobs] == ["a1", "a2"]
    assert jobs[0] == job_summary(  # the record, its totals, and every stream with all its fields
        A1,
        records_synced=4318,
        bytes_synced=1050,
        duration_seconds=900.0,
        streams_succeeded=2,
        streams_failed=0,
        streams=[stream_summary(**stream) for stream in A1["streams"]],
    )
    assert (jobs[1]["status"], jobs[1]["failed_at"], jobs[1]["error_summary"]) == (
        "failed",
        "2026-04-04T10:40:00Z",
        "401 Unauthorized",
    )
    lines = s3.ndjson(f"{PREFIX}/logs/dt=2026-04-04/{first}.ndjson.gz")
    assert [(x["job_id"], x["level"], x["message"], x["timestamp"], x["stream"]) for x in lines] == [
        ("a1", "INFO", "Syncing stream: Account", "2026-04-04T10:00:03Z", "Account"),
        ("a1", "WARN", "Salesforce API rate limit at 85% — throttling requests", "2026-04-04T10:00:04Z", None),
        ("a1", "INFO", "Stream Account: 4,218 records synced in 18.2s", None, "Account"),
        ("a2", "ERROR", "401 Unauthorized: token expired", "2026-04-04T10:39:50Z", None),
    ]
    assert {x["connection_name"] for x in lines} == {"Salesforce → Snowflake", "Stripe → Postgres"}
    assert [j["job_id"] for j in s3.ndjson(f"{PREFIX}/jobs/dt=2026-04-05/{second}.ndjson.gz")] == ["b1"]
    assert [x["message"] for x in s3.ndjson(f"{PREFIX}/logs/dt=2026-04-05/{second}.ndjson.gz")] == ["Sync complete"]


def test_the_export_metrics_count_objects_and_show_the_lag(archive: Archive, clock: FakeClock) -> None:
    client = create_app(archive.config, store=archive.store, clock=clock).test_client()
    before = parse_samples(client.get("/metrics").get_data(as_text=True))

    archive.exporter.export_once()

    after = parse_samples(client.get("/metrics").get_data(as_text=True))
    # Before: a1 (finished 4 April 10:15) is the oldest job not exported.
    assert before.value("calabi_exporter_s3_export_lag_seconds") == T0 - (T0 - 2 * DAY + 2 * 3600 + 900)
    # After: only d1, finished two minutes ago, still waits for its hour to be sealed.
    assert after.value("calabi_exporter_s3_export_lag_seconds") == 120.0
    assert after.value("calabi_exporter_s3_exported_objects_total", outcome="success") == 4
    assert after.value("calabi_exporter_s3_exported_objects_total", outcome="failure") == 0
    assert after.value("calabi_exporter_s3_export_last_success_timestamp_seconds") == T0


def test_a_second_export_of_the_same_range_writes_the_same_keys(archive: Archive, s3: MotoServer) -> None:
    env = {
        **os.environ,
        "CALABI_DATA_DIR": archive.config.data_dir,
        "CALABI_DATABASE_URL": archive.config.database_url,
        "CALABI_S3_EXPORT__BUCKET": BUCKET,
        "CALABI_S3_EXPORT__PREFIX": PREFIX,
        "CALABI_S3_EXPORT__ENDPOINT_URL": s3.url,
    }
    command = [sys.executable, "-m", "calabi_exporter", "export", "--since", "2026-04-04", "--until", "2026-04-07"]

    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    objects_first = s3.objects()
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    objects_second = s3.objects()

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert first.stdout == second.stdout
    # The range covers d1 too, whose hour the background export would still wait for.
    assert len(objects_first) == 6
    assert sorted(objects_first) == sorted(objects_second)
    assert first.stdout.splitlines() == sorted(
        (f"s3://{BUCKET}/{key}" for key in objects_first),
        key=lambda url: (url.split("/dt=")[1], "/logs/" in url),
    )
    assert {k: v["ETag"] for k, v in objects_first.items()} == {k: v["ETag"] for k, v in objects_second.items()}


def test_with_s3_down_nothing_is_purged_and_the_export_then_the_purge_resume(
    archive: Archive, s3: MotoServer, clock: FakeClock
) -> None:
    store, exporter = archive.store, archive.exporter
    purger = Purger(store, archive.config, clock=clock)
    clock.advance(40 * DAY)  # every finished job is past the window now
    s3.stop()

    wait = exporter.step()
    purged_during_outage = purger.purge_once()
    kept = [store.reads.job(j) is not None for j in ("a1", "a2", "b1", "d1", "c1")]
    failures = store.metrics.snapshot().export.failed_objects

    s3.start()
    wait_after = exporter.step()
    purged_after = purger.purge_once()

    # Only c1 goes meanwhile: running, unchanged for 40 days, abandoned; nothing of it waits for S3.
    assert (wait, purged_during_outage, kept, failures) == (S3Exporter.BACKOFF.first, 1, [True] * 4 + [False], 1)
    assert wait_after == S3Exporter.INTERVAL
    assert purged_after == 4
    assert [store.reads.job(j) is not None for j in ("a1", "a2", "b1", "d1")] == [False] * 4
    assert len(s3.objects(f"{PREFIX}/jobs/")) == 3 and len(s3.objects(f"{PREFIX}/logs/")) == 3
    exported_ids = sorted(j["job_id"] for key in s3.objects(f"{PREFIX}/jobs/") for j in s3.ndjson(key))
    assert exported_ids == ["a1", "a2", "b1", "d1"]


def test_a_line_arriving_after_the_export_sends_the_batch_again_to_the_same_keys(
    archive: Archive, s3: MotoServer
) -> None:
    store, exporter = archive.store, archive.exporter
    exporter.export_once()
    keys_before = sorted(s3.objects())

    store.ingest.logs("b1", [LogLine("WARN", "Late summary from the worker", T0 - 20)])
    again = exporter.export_once()

    assert again == 1
    assert sorted(s3.objects()) == keys_before
    late = next(k for k in keys_before if k.startswith(f"{PREFIX}/logs/dt=2026-04-05/"))
    assert [x["message"] for x in s3.ndjson(late)] == ["Sync complete", "Late summary from the worker"]
    assert exporter.export_once() == 0


def test_a_job_arriving_late_for_an_exported_hour_gets_its_own_object(archive: Archive, s3: MotoServer) -> None:
    store, exporter = archive.store, archive.exporter
    exporter.export_once()
    before = s3.objects(f"{PREFIX}/jobs/dt=2026-04-04/")

    late = {
        "job_id": "a3",
        "connection_name": "Stripe → Postgres",
        "status": "cancelled",
        "finished_at": at("04T10:50:00"),
    }
    store.ingest.jobs([parse_job(late)], endpoint="jobs")
    exporter.export_once()

    after = s3.objects(f"{PREFIX}/jobs/dt=2026-04-04/")
    new = sorted(set(after) - set(before))
    assert new == [f"{PREFIX}/jobs/dt=2026-04-04/{batch_name('20260404T100000Z', 'a3')}.ndjson.gz"]
    assert {k: v["ETag"] for k, v in before.items()} == {k: after[k]["ETag"] for k in before}
    assert [j["job_id"] for j in s3.ndjson(new[0])] == ["a3"]


def test_export_without_a_bucket_or_with_a_bad_range_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "CALABI_DATA_DIR": str(tmp_path / "data")}
    base = [sys.executable, "-m", "calabi_exporter", "export"]

    no_bucket = subprocess.run([*base, "--since", "7d"], env=env, capture_output=True, text=True, timeout=60)
    env["CALABI_S3_EXPORT__BUCKET"] = BUCKET
    bad_since = subprocess.run([*base, "--since", "last week"], env=env, capture_output=True, text=True, timeout=60)
    env["CALABI_S3_EXPORT__BATCH_SECONDS"] = "7m"
    bad_window = subprocess.run([*base, "--since", "7d"], env=env, capture_output=True, text=True, timeout=60)

    assert [(r.returncode, r.stderr) for r in (no_bucket, bad_since, bad_window)] == [
        (2, "calabi-exporter: config error: s3_export.bucket: is not set; export needs a bucket\n"),
        (
            2,
            "calabi-exporter: config error: --since: must be RFC 3339, a date like 2026-04-01, "
            "or an age like 7d (got 'last week')\n",
        ),
        (
            2,
            "calabi-exporter: config error: s3_export.batch_seconds: must be a whole number of minutes "
            "dividing a day, e.g. 1h or 15m (got '7m')\n",
        ),
    ]


def test_a_version_1_store_opens_and_its_jobs_are_exported(tmp_path: Path, clock: FakeClock) -> None:
    store = Store.sqlite(tmp_path / "v1", clock=clock)
    fill(store)
    store.close()
    db = sqlite3.connect(tmp_path / "v1" / "calabi-exporter.sqlite3")
    db.executescript(  # the jobs table of version 1
        "DROP INDEX jobs_by_export_batch; ALTER TABLE jobs DROP COLUMN export_batch; DROP TABLE export_batches;"
        " DROP INDEX jobs_by_time; DROP INDEX jobs_by_status_time; DROP INDEX jobs_by_connection_time;"
        " ALTER TABLE jobs DROP COLUMN job_time; DROP INDEX connections_waiting;"
        " ALTER TABLE connections DROP COLUMN admitted; ALTER TABLE connections DROP COLUMN version;"
        " DROP TABLE connection_overflow; PRAGMA user_version = 1;"
    )
    db.close()

    reopened = Store.sqlite(tmp_path / "v1", clock=clock, s3_export=True)
    sealed = reopened.exports.seal(T0, 3600)

    assert sealed == 4
    assert [b.name[:16] for b in reopened.exports.waiting()] == [
        "20260404T100000Z",
        "20260405T230000Z",
        "20260406T070000Z",
    ]
    reopened.close()


def test_the_index_of_jobs_waiting_for_export_exists_once_export_is_on(tmp_path: Path) -> None:
    def indexes() -> set[str]:
        db = sqlite3.connect(tmp_path / "d" / "calabi-exporter.sqlite3")
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        db.close()
        return names

    Store.sqlite(tmp_path / "d").close()
    without = indexes()
    Store.sqlite(tmp_path / "d", s3_export=True).close()
    Store.sqlite(tmp_path / "d").close()  # another process without export leaves it alone
    after = indexes()

    assert "jobs_to_export" not in without
    assert after - without == {"jobs_to_export"}


def test_an_hour_is_purged_whole_and_never_uploaded_again_once_the_purge_took_part_of_it(
    archive: Archive, s3: MotoServer, clock: FakeClock
) -> None:
    store, exporter = archive.store, archive.exporter
    exporter.export_once()
    key = next(k for k in s3.objects(f"{PREFIX}/jobs/dt=2026-04-04/"))
    # 30 days after a1 finished (10:15) but not after a2 (10:40): their hour is not purged yet.
    clock.now = T0 - 2 * DAY + 2 * HOUR + 30 * 60 + 30 * DAY
    first = store.retention.purge(clock() - 30 * DAY, exported_only=True)
    clock.advance(HOUR)
    part = store.retention.purge(clock() - 30 * DAY, limit=1, exported_only=True)  # one transaction takes only a1
    store.ingest.logs("a2", [LogLine("INFO", "A late line for a job whose hour is being purged")])
    waiting = store.exports.waiting()
    again = exporter.export_range(T0 - 3 * DAY, T0)
    rest = store.retention.purge(clock() - 30 * DAY, exported_only=True)

    assert (first, part, rest) == (0, 1, 1)
    assert waiting == [] and [b.name for b in again if b.day == "2026-04-04"] == []
    assert [j["job_id"] for j in s3.ndjson(key)] == ["a1", "a2"]  # the object still holds the whole hour
