"""The pollers' health in /metrics: polls by outcome from 0 for each configured poller, and the last good poll."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from calabi_exporter.config import Config
from calabi_exporter.sources import POLL_OUTCOMES
from calabi_exporter.store import Store
from calabi_exporter.web import create_app

from tests.support.clock import T0
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
