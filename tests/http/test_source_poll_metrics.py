"""The pollers' health in /metrics: polls by outcome from 0 for each configured poller, and the last good poll."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from calabi_exporter.config import Config
from calabi_exporter.model import parse_job
from calabi_exporter.sources import POLL_OUTCOMES, ConnectionState
from calabi_exporter.store import Store
from calabi_exporter.web import create_app

from tests.support.clock import T0
from tests.support.jobs import job
from tests.support.samples import Samples, parse_samples

pytestmark = pytest.mark.every_backend  # the counts are in the store, the same on SQLite and PostgreSQL


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(
        data_dir=str(tmp_path / "data"),
        sources_airbyte_client_id="airbyte-application",
        sources_airbyte_client_secret="airbyte-secret-for-tests",
        sources_fivetran_api_key="key-for-tests",
        sources_fivetran_api_secret="secret-for-tests",
    )


def test_each_poll_is_counted_by_outcome_and_a_good_one_is_the_last_good_poll(
    store: Store, scrape: Callable[[], Samples]
) -> None:
    store.source_polls.polled("airbyte", "ok", T0)
    store.source_polls.polled("airbyte", "rate_limited", T0 + 60)
    store.source_polls.polled("airbyte", "ok", T0 + 120)
    store.source_polls.polled("fivetran", "refused", T0 + 30)

    samples = scrape()

    assert samples.family("calabi_exporter_source_polls_total") == {
        frozenset({("source", source), ("outcome", outcome)}): float(
            {("airbyte", "ok"): 2, ("airbyte", "rate_limited"): 1, ("fivetran", "refused"): 1}.get((source, outcome), 0)
        )
        for source in ("airbyte", "fivetran")
        for outcome in POLL_OUTCOMES
    }
    assert samples.family("calabi_exporter_source_last_successful_poll_timestamp_seconds") == {
        frozenset({("source", "airbyte")}): T0 + 120
    }


def test_without_a_poller_configured_neither_family_is_shown(tmp_path: Path, make_store: Callable[..., Store]) -> None:
    config = Config(data_dir=str(tmp_path / "plain"))
    store = make_store(config.data_path)
    store.source_polls.polled("airbyte", "ok", T0)  # counted before the poller was turned off
    text = create_app(config, store=store).test_client().get("/metrics").get_data(as_text=True)

    assert parse_samples(text).family("calabi_exporter_source_polls_total") == {}
    assert "calabi_exporter_source_last_successful_poll_timestamp_seconds" not in text


def test_what_a_polled_connection_reports_of_itself_is_on_its_series_and_redrawn_when_it_changes(
    store: Store, scrape: Callable[[], Samples]
) -> None:
    store.ingest.jobs([parse_job(job("fivetran:sync-1", connection="orders"))], endpoint="fivetran")
    store.source_polls.save_states(
        [ConnectionState("orders", {"setup": "connected", "update": "delayed"}, False, 3600.0)], T0
    )
    first = scrape()
    store.source_polls.save_states(
        [ConnectionState("orders", {"setup": "broken", "update": "on_schedule"}, True, None)], T0 + 60
    )
    second = scrape()

    assert first.family("calabi_sync_connection_state") == {
        frozenset({("connection", "orders"), ("kind", kind), ("state", state)}): value
        for kind, state, value in [
            ("setup", "incomplete", 0.0),
            ("setup", "connected", 1.0),
            ("setup", "broken", 0.0),
            ("update", "on_schedule", 0.0),
            ("update", "delayed", 1.0),
        ]
    }
    assert first.value("calabi_sync_connection_paused", connection="orders") == 0
    assert first.value("calabi_sync_connection_schedule_interval_seconds", connection="orders") == 3600
    assert second.value("calabi_sync_connection_state", connection="orders", kind="setup", state="broken") == 1
    assert second.value("calabi_sync_connection_state", connection="orders", kind="update", state="delayed") == 0
    assert second.value("calabi_sync_connection_paused", connection="orders") == 1
    assert second.family("calabi_sync_connection_schedule_interval_seconds") == {}


def test_a_state_the_platform_reports_that_is_not_documented_still_shows_as_the_current_one(
    store: Store, scrape: Callable[[], Samples]
) -> None:
    store.ingest.jobs([parse_job(job("fivetran:sync-1", connection="orders"))], endpoint="fivetran")
    store.source_polls.save_states([ConnectionState("orders", {"sync": "throttled"}, None, None)], T0)

    assert {dict(labels)["state"]: v for labels, v in scrape().family("calabi_sync_connection_state").items()} == {
        "scheduled": 0.0,
        "syncing": 0.0,
        "paused": 0.0,
        "rescheduled": 0.0,
        "throttled": 1.0,
    }
