"""What /metrics says a connection usually does, learned from the backdated history it was sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calabi_exporter.config import Config, ConnectionSettings
from calabi_exporter.model import parse_job
from calabi_exporter.sources import ConnectionState
from calabi_exporter.store import Store
from calabi_exporter.timeutil import format_rfc3339
from flask.testing import FlaskClient

from tests.support.clock import T0, FakeClock
from tests.support.jobs import job
from tests.support.samples import Samples

pytestmark = pytest.mark.every_backend  # learned in the store's write: the same on SQLite and PostgreSQL

HOUR = 3600.0
DAY = 86_400.0
LEARNED = (
    "calabi_sync_expected_interval_seconds",
    "calabi_sync_overdue_threshold_seconds",
    "calabi_sync_records_expected",
    "calabi_sync_last_success_records",
    "calabi_sync_last_success_records_score",
)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(
        data_dir=str(tmp_path / "data"),
        connections={
            "declared": ConnectionSettings(expected_interval_seconds=1800.0, slo_objective=0.95),
        },
    )


def successes(
    connection: str,
    every: float,
    records: list[int],
    *,
    last: float = T0 - 600,
    status: str = "succeeded",
    prefix: str = "",
) -> list[dict[str, Any]]:
    """One job per count in ``records``, ``every`` seconds apart, the newest finishing at ``last``."""
    n = len(records)
    return [
        job(
            f"{prefix}{connection}-{i}",
            status,
            connection=connection,
            started_at=format_rfc3339(last - (n - 1 - i) * every - 300),
            finished_at=format_rfc3339(last - (n - 1 - i) * every),
            records_synced=count,
        )
        for i, count in enumerate(records)
    ]


def learned(samples: Samples, connection: str) -> dict[str, float]:
    """The learned families' values of one connection (those it has)."""
    out = {}
    for name in LEARNED:
        value = samples.family(name).get(frozenset({("connection", connection)}))
        if value is not None:
            out[name] = value
    return out


STEADY = [1000, 1010, 990, 1005, 995, 1020, 980, 1000, 1015, 985]


def test_an_hourly_connection_with_steady_volumes_is_learned_and_its_newest_success_judged(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    client.post("/api/v1/jobs", json=successes("hourly", HOUR, [*STEADY, 400]))

    assert learned(scrape(), "hourly") == {
        "calabi_sync_expected_interval_seconds": 3600.0,
        "calabi_sync_overdue_threshold_seconds": 7200.0,
        "calabi_sync_records_expected": 1000.0,
        "calabi_sync_last_success_records": 400.0,
        "calabi_sync_last_success_records_score": pytest.approx(-600 / 14.826),
    }


def test_one_job_at_a_time_learns_what_one_batch_of_them_learns(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    client.post("/api/v1/jobs", json=successes("batch", HOUR, [*STEADY, 400]))
    for record in successes("one-by-one", HOUR, [*STEADY, 400]):
        client.post("/api/v1/jobs", json=record)

    samples = scrape()
    assert learned(samples, "one-by-one") == learned(samples, "batch")


def test_a_daily_connection_is_overdue_after_a_day_and_a_half_and_too_few_successes_judge_no_volume(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    client.post("/api/v1/jobs", json=successes("daily", DAY, [500] * 7))

    assert learned(scrape(), "daily") == {
        "calabi_sync_expected_interval_seconds": 86400.0,
        "calabi_sync_overdue_threshold_seconds": 129600.0,
        "calabi_sync_last_success_records": 500.0,
    }


def test_an_outage_and_a_failed_retry_in_the_history_leave_the_hourly_schedule_as_it_was(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    history = successes("irregular", HOUR, [100] * 12)
    del history[4:7]  # a four-hour gap
    failed = job("irregular-retry", "failed", connection="irregular", finished_at=format_rfc3339(T0 - 30 * 60))
    client.post("/api/v1/jobs", json=[*history, failed])

    assert learned(scrape(), "irregular") == {
        "calabi_sync_expected_interval_seconds": 3600.0,
        "calabi_sync_overdue_threshold_seconds": 7200.0,
        "calabi_sync_last_success_records": 100.0,
    }


def test_five_successes_are_too_short_a_history_to_learn_a_schedule(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    client.post("/api/v1/jobs", json=successes("short", HOUR, [10] * 5))

    assert learned(scrape(), "short") == {"calabi_sync_last_success_records": 10.0}


def test_resets_are_left_out_of_both_the_schedule_and_the_volume(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    history = successes("with-resets", HOUR, [*STEADY, 1000])
    resets = [
        job(
            f"with-resets-reset-{i}",
            connection="with-resets",
            job_type="reset",
            finished_at=format_rfc3339(T0 - 600 - HOUR * i - 1800),
            records_synced=5_000_000,
        )
        for i in range(3)
    ]
    client.post("/api/v1/jobs", json=[*history, *resets])
    newest_reset = job(
        "with-resets-latest", connection="with-resets", job_type="reset", finished_at=format_rfc3339(T0 - 60)
    )
    client.post("/api/v1/jobs", json={**newest_reset, "records_synced": 0})

    assert learned(scrape(), "with-resets") == {
        "calabi_sync_expected_interval_seconds": 3600.0,
        "calabi_sync_overdue_threshold_seconds": 7200.0,
        "calabi_sync_records_expected": 1000.0,
        "calabi_sync_last_success_records": 1000.0,
        "calabi_sync_last_success_records_score": 0.0,
    }


def test_a_connection_whose_syncs_usually_move_nothing_has_no_usual_volume(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    client.post("/api/v1/jobs", json=successes("mostly-empty", HOUR, [0] * 9 + [7, 0, 0]))

    assert learned(scrape(), "mostly-empty") == {
        "calabi_sync_expected_interval_seconds": 3600.0,
        "calabi_sync_overdue_threshold_seconds": 7200.0,
        "calabi_sync_last_success_records": 0.0,
    }


def test_a_declared_interval_wins_over_the_learned_one_and_its_objective_over_the_default(
    client: FlaskClient, scrape: Callable[[], Samples]
) -> None:
    client.post("/api/v1/jobs", json=[*successes("declared", HOUR, [10] * 8), *successes("learned", HOUR, [10] * 8)])
    samples = scrape()

    assert samples.family("calabi_sync_expected_interval_seconds") == {
        frozenset({("connection", "declared")}): 1800.0,
        frozenset({("connection", "learned")}): 3600.0,
    }
    assert samples.family("calabi_sync_overdue_threshold_seconds") == {
        frozenset({("connection", "declared")}): 5400.0,
        frozenset({("connection", "learned")}): 7200.0,
    }
    assert samples.family("calabi_sync_slo_objective") == {
        frozenset({("connection", "declared")}): 0.95,
        frozenset({("connection", "learned")}): 0.99,
    }


def test_the_schedule_a_platform_reports_wins_over_the_learned_one_paused_or_not(
    client: FlaskClient, store: Store, scrape: Callable[[], Samples]
) -> None:
    client.post("/api/v1/jobs", json=[*successes("every-6h", HOUR, [10] * 8), *successes("paused", HOUR, [10] * 8)])
    store.source_polls.save_states(
        [ConnectionState("every-6h", {}, False, 6 * HOUR), ConnectionState("paused", {}, True, None)], T0
    )
    samples = scrape()

    assert samples.family("calabi_sync_overdue_threshold_seconds") == {
        frozenset({("connection", "every-6h")}): 9 * HOUR,
        frozenset({("connection", "paused")}): 7200.0,  # CalabiSyncOverdue leaves paused connections out
    }
    assert samples.family("calabi_sync_connection_paused")[frozenset({("connection", "paused")})] == 1.0


def test_a_connection_without_successes_has_no_learned_series(
    client: FlaskClient, store: Store, scrape: Callable[[], Samples]
) -> None:
    store.ingest.jobs([parse_job(job("f1", "failed", connection="failing"))], endpoint="jobs")

    assert learned(scrape(), "failing") == {}


def test_a_store_from_before_success_windows_learns_from_the_jobs_it_holds(
    client: FlaskClient, store: Store, scrape: Callable[[], Samples]
) -> None:
    history = successes("upgraded", HOUR, [*STEADY, 400])
    client.post("/api/v1/jobs", json=history[:-1])
    store.database.submit(lambda tx: tx.execute("DELETE FROM success_windows"))  # as an older store holds them
    client.post("/api/v1/jobs", json=history[-1])

    assert learned(scrape(), "upgraded") == learned_from_scratch(client, scrape, "fresh", [*STEADY, 400])


def learned_from_scratch(
    client: FlaskClient, scrape: Callable[[], Samples], connection: str, records: list[int]
) -> dict[str, float]:
    client.post("/api/v1/jobs", json=successes(connection, HOUR, records))
    return learned(scrape(), connection)


def test_a_forgotten_connection_learns_again_only_from_what_it_did_since(
    client: FlaskClient, store: Store, clock: FakeClock, scrape: Callable[[], Samples]
) -> None:
    client.post("/api/v1/jobs", json=successes("reborn", DAY, [500] * 8, last=T0 - 2 * DAY))
    store.retention.forget_connection("reborn")
    clock.advance(4 * HOUR)
    client.post("/api/v1/jobs", json=successes("reborn", HOUR, [10] * 3, last=T0 + 3 * HOUR, prefix="again"))

    assert learned(scrape(), "reborn") == {"calabi_sync_last_success_records": 10.0}
