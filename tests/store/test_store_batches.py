"""A batch lands exactly as the same records sent one at a time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from calabi_exporter.model import parse_job
from calabi_exporter.store import MetricsSnapshot, Store
from calabi_exporter.store.database import Tx
from calabi_exporter.store.ingest_state import StoredState

from tests.support.clock import FakeClock

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL


def records() -> list[dict[str, object]]:
    """Three connections, some already known, streams shared across jobs, one job twice."""
    out: list[dict[str, object]] = []
    for i in range(12):
        connection = ["Salesforce → Snowflake", "Stripe → Postgres", "HubSpot → BigQuery"][i % 3]
        failed = i % 4 == 0
        out.append(
            {
                "job_id": f"job-{i}",
                "connection_name": connection,
                "status": "failed" if failed else "succeeded",
                "started_at": f"2026-04-06T{8 + i:02d}:00:00Z",
                "finished_at": f"2026-04-06T{8 + i:02d}:10:00Z",
                "streams": [
                    {"name": "Account", "status": "failed" if failed else "succeeded", "records_synced": 10 * i},
                    {"name": f"Extra{i % 2}", "status": "succeeded", "records_synced": i},
                ],
            }
        )
    out.append(dict(out[5]))  # the same job again in the same batch
    return out


def comparable(snapshot: MetricsSnapshot) -> MetricsSnapshot:
    """The snapshot without what depends on how the writes were grouped (file size, version stamps)."""
    return replace(snapshot, store_bytes=None, connections=[replace(c, version=0) for c in snapshot.connections])


def test_a_batch_gives_the_same_aggregates_as_one_record_per_request(
    tmp_path: Path, clock: FakeClock, make_store: Callable[..., Store]
) -> None:
    batched = make_store(tmp_path / "batched", clock=clock)
    single = make_store(tmp_path / "single", clock=clock)
    jobs = [parse_job(r) for r in records()]
    # Both stores already know one connection and one of its streams.
    for store in (batched, single):
        store.ingest.jobs(jobs[:1], endpoint="jobs")

    batch_result = batched.ingest.jobs(jobs[1:], endpoint="jobs")
    single_outcomes = [single.ingest.jobs([job], endpoint="jobs").outcomes[0] for job in jobs[1:]]

    assert batch_result.outcomes == single_outcomes
    assert batch_result.outcomes[-1] == "unchanged"
    assert comparable(batched.metrics.snapshot()) == comparable(single.metrics.snapshot())
    snapshot = batched.metrics.snapshot()
    account = {(s.connection, s.stream): s.records_synced for s in snapshot.streams}
    assert account[("Salesforce → Snowflake", "Account")] == 0 + 30 + 60 + 90
    assert {c.connection: c.jobs["failed"] for c in snapshot.connections} == {
        "Salesforce → Snowflake": 1,
        "Stripe → Postgres": 1,
        "HubSpot → BigQuery": 1,
    }
    batched.close()
    single.close()


SF = "Salesforce → Snowflake"


def test_the_stored_state_gives_a_new_aggregate_at_each_call_so_a_plan_changes_only_its_own(
    tmp_path: Path, clock: FakeClock, make_store: Callable[..., Store]
) -> None:
    store = make_store(tmp_path / "store", clock=clock)
    store.ingest.jobs([parse_job(r) for r in records()[:3]], endpoint="jobs")

    def read_twice(tx: Tx) -> tuple[object, ...]:
        state = StoredState(tx)
        state.prefetch([parse_job(records()[0])])
        first, stream = state.connection(SF), state.stream(SF, "Account")
        assert first is not None and stream is not None
        first.jobs["failed"] += 5
        stream.records_synced += 5
        again, stream_again = state.connection(SF), state.stream(SF, "Account")
        assert again is not None and stream_again is not None
        return again.jobs["failed"], stream_again.records_synced, state.connection("Nobody → Nowhere")

    assert store.database.submit(read_twice) == (1, 0, None)
