"""Listings on a million stored jobs are served by indexes, in order, not by scanning the job history."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from calabi_exporter.store import JobFilter, Store

from tests.support.clock import T0

pytestmark = pytest.mark.slow  # containers or minutes of real servers: not in the day-to-day subset

JOBS = 1_000_000
SPACING = 2.592  # seconds between job times: a million jobs over 30 days


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A store of 1,000,000 finished jobs over 1,000 connections and 30 days; every tenth failed."""
    data_dir: Path = tmp_path_factory.mktemp("million")
    store = Store.sqlite(data_dir, synchronous="normal")
    db = sqlite3.connect(store.database.path)
    db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?2 - 1)"
        " INSERT INTO jobs (job_id, connection_name, status, started_at, finished_at, duration_seconds,"
        " job_time, first_seen, updated_at)"
        " SELECT printf('job-%07d', i), printf('connection %04d', i % 1000),"
        " CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'succeeded' END,"
        " ?1 - (?2 - i) * ?3, ?1 - (?2 - i) * ?3 + 60, 60.0, ?1 - (?2 - i) * ?3, ?1, ?1 FROM n",
        (T0, JOBS, SPACING),
    )
    db.commit()
    db.close()
    yield store
    store.close()


LAST_DAY = T0 - 86400


@pytest.mark.parametrize(
    ("where", "index"),
    [
        (JobFilter(statuses=("failed",), since=LAST_DAY), "jobs_by_status_time"),
        (JobFilter(statuses=("failed",)), "jobs_by_status_time"),
        (JobFilter(connections=("connection 0007",), since=LAST_DAY), "jobs_by_connection_time"),
        (
            JobFilter(connections=("connection 0007", "connection 0008"), statuses=("failed",)),
            "jobs_by_connection_time",
        ),
        (JobFilter(since=LAST_DAY, until=T0), "jobs_by_time"),
        (JobFilter(), "jobs_by_time"),
    ],
)
def test_each_filtered_listing_uses_an_index(million: Store, where: JobFilter, index: str) -> None:
    plan = million.reads.jobs_plan(where, 101)

    assert any(f"USING INDEX {index}" in step for step in plan), plan
    assert not any(step.startswith("SCAN jobs") and "USING INDEX" not in step for step in plan), plan


def test_one_status_and_a_time_range_come_in_index_order_without_a_sort(million: Store) -> None:
    plan = million.reads.jobs_plan(JobFilter(statuses=("failed",), since=LAST_DAY), 101)

    assert plan == ["SEARCH jobs USING INDEX jobs_by_status_time (status=? AND job_time>?)"]


def test_the_newest_100_failed_jobs_of_the_last_day_are_exactly_these(million: Store) -> None:
    page = million.reads.jobs(JobFilter(statuses=("failed",), since=LAST_DAY), 100)
    after = million.reads.jobs(JobFilter(statuses=("failed",), since=LAST_DAY), 3, (page[-1][0], page[-1][1].job_id))

    # Job i has job_time T0 - (1,000,000 - i) × 2.592 s and failed when i is a multiple of 10.
    assert [job.job_id for _, job in page] == [f"job-{i:07d}" for i in range(999_990, 998_999, -10)]
    assert [job.job_id for _, job in after] == ["job-0998990", "job-0998980", "job-0998970"]
