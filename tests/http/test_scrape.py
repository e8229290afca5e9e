"""The streamed ``/metrics`` body: what the library writes, re-rendered only where something changed."""

from __future__ import annotations

import gc
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from calabi_exporter.collector import SyncJobCollector
from calabi_exporter.config import Config
from calabi_exporter.connection_parts import ConnectionPart
from calabi_exporter.exposition import LineWriter
from calabi_exporter.joblogs import parse_text
from calabi_exporter.metric_families import ScrapeSettings, Thresholds
from calabi_exporter.model import parse_job
from calabi_exporter.scrape import CHUNK_BYTES, ScrapeRenderer
from calabi_exporter.store import SeriesLimits, Store
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from tests.support.clock import FakeClock
from tests.support.jobs import job

pytestmark = pytest.mark.every_backend  # the store's behaviour, the same on SQLite and PostgreSQL

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
SERIES_FAMILY = b"# HELP calabi_exporter_series "


class CountingRenderer(ScrapeRenderer):
    """The renderer, counting the connections it renders."""

    rendered: list[str]

    def render_connection(self, part: ConnectionPart, writer: LineWriter) -> tuple[tuple[bytes, ...], int]:
        self.rendered.append(part.name)
        return super().render_connection(part, writer)


def settings(**options: object) -> ScrapeSettings:
    return ScrapeSettings(Thresholds.from_config(Config()), **options)  # type: ignore[arg-type]


def renderer_for(store: Store, **options: object) -> CountingRenderer:
    renderer = CountingRenderer(settings(**options), store.metrics.versions, store.metrics.snapshot)
    renderer.rendered = []
    return renderer


def library_bodies(store: Store, **options: object) -> tuple[bytes, bytes]:
    """What prometheus_client's own encoders write for the store (text, OpenMetrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SyncJobCollector(store.metrics.snapshot, Thresholds.from_config(Config()), **options))  # type: ignore[arg-type]
    return generate_latest(registry), generate_openmetrics(registry)


def without_series(body: bytes) -> bytes:
    """The body without its last family, ``calabi_exporter_series`` (an OpenMetrics body keeps its EOF)."""
    head, _, tail = body.rpartition(SERIES_FAMILY)
    return head + (b"# EOF\n" if tail.endswith(b"# EOF\n") else b"")


def post(store: Store, *records: dict[str, object]) -> None:
    store.ingest.jobs([parse_job(r) for r in records], endpoint="jobs")


@pytest.fixture
def small_budget(tmp_path: Path, clock: FakeClock, make_store: Callable[..., Store]) -> Store:
    """Three connections with series of their own (and odd names), two past the budget, jobs in progress."""
    store = make_store(
        tmp_path / "d", clock=clock, limits=SeriesLimits(max_connections=3, max_streams_per_connection=2)
    )
    names = ['Conn "q" \\ new\nline → ✓', "HubSpot → BigQuery", "Salesforce → Snowflake", "Late A", "Late B"]
    for n, name in enumerate(names):
        streams = [{"name": f"s{k}", "status": "succeeded", "records_synced": n * k} for k in range(3)]
        post(
            store,
            job(
                f"f{n}",
                "failed",
                connection=name,
                started_at="2026-04-06T08:00:00Z",
                finished_at="2026-04-06T08:01:00Z",
                duration_seconds=60,
                error_summary='quote " \\',
                streams=streams,
            ),
            job(f"r{n}", "running", connection=name, started_at="2026-04-06T09:00:00Z"),
        )
    store.ingest.logs("f4", parse_text("ERROR 401 Unauthorized\nINFO Stream s1: 5 records synced"))
    return store


@pytest.mark.parametrize("per_stream", [True, False], ids=["with streams", "without streams"])
def test_the_body_is_byte_for_byte_what_prometheus_client_writes_in_both_formats(
    small_budget: Store, per_stream: bool
) -> None:
    options = {"streams_exposed": lambda name: per_stream or name != "HubSpot → BigQuery"}
    renderer = renderer_for(small_budget, **options)

    text, openmetrics = renderer.body(), renderer.body(OPENMETRICS)

    assert without_series(text) == library_bodies(small_budget, **options)[0]
    assert without_series(openmetrics) == library_bodies(small_budget, **options)[1]
    samples = len([line for line in text.splitlines() if not line.startswith(b"#")])
    assert b'connection="__overflow__"' in text
    assert text.endswith(f"calabi_exporter_series {samples}.0\n".encode())


def test_a_second_scrape_renders_only_the_connection_that_changed(small_budget: Store) -> None:
    renderer = renderer_for(small_budget)
    renderer.body()
    first = list(renderer.rendered)

    post(small_budget, job("f1-again", connection="HubSpot → BigQuery", finished_at="2026-04-06T10:00:00Z"))
    renderer.rendered.clear()
    body = renderer.body()

    assert first == ['Conn "q" \\ new\nline → ✓', "HubSpot → BigQuery", "Salesforce → Snowflake", "__overflow__"]
    assert renderer.rendered == ["HubSpot → BigQuery", "__overflow__"]
    assert without_series(body) == library_bodies(small_budget)[0]


def test_a_job_starting_re_renders_its_connection_though_no_aggregate_moved(small_budget: Store) -> None:
    renderer = renderer_for(small_budget)
    renderer.body()

    post(small_budget, job("r1", "succeeded", connection="HubSpot → BigQuery", finished_at="2026-04-06T09:30:00Z"))
    post(small_budget, job("p9", "pending", connection="Salesforce → Snowflake"))
    renderer.rendered.clear()
    body = renderer.body()

    assert sorted(renderer.rendered) == ["HubSpot → BigQuery", "Salesforce → Snowflake", "__overflow__"]
    assert without_series(body) == library_bodies(small_budget)[0]


def test_forgotten_connections_leave_the_body_but_for_their_jobs_still_running(small_budget: Store) -> None:
    renderer = renderer_for(small_budget)
    renderer.body()

    small_budget.retention.forget_connection("HubSpot → BigQuery")
    body = renderer.body()

    left = [line.partition(b"{")[0] for line in body.splitlines() if b"HubSpot" in line]
    assert left == [
        b"calabi_sync_jobs_in_progress",
        b"calabi_sync_jobs_in_progress",
        b"calabi_sync_oldest_job_start_timestamp_seconds",
        b"calabi_sync_failure_threshold",
        b"calabi_sync_freshness_threshold_seconds",
        b"calabi_sync_stuck_floor_seconds",
        b"calabi_sync_pending_threshold_seconds",
    ]
    assert without_series(body) == library_bodies(small_budget)[0]


def test_concurrent_scrapes_share_one_render(small_budget: Store) -> None:
    renderer = renderer_for(small_budget)
    start = threading.Barrier(4)
    bodies: list[bytes] = []

    def scrape() -> None:
        start.wait()
        bodies.append(renderer.body())

    threads = [threading.Thread(target=scrape) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(bodies) == 4 and len(set(bodies)) == 1
    # Each connection once; the overflow (a few lines, never kept) once per scrape.
    assert sorted(name for name in renderer.rendered if name != "__overflow__") == [
        'Conn "q" \\ new\nline → ✓',
        "HubSpot → BigQuery",
        "Salesforce → Snowflake",
    ]


@pytest.mark.slow
def test_a_large_scrape_is_streamed_in_chunks_never_holding_the_body(
    tmp_path: Path, clock: FakeClock, make_store: Callable[..., Store]
) -> None:
    store = make_store(tmp_path / "big", clock=clock, synchronous="normal")
    streams = [{"name": f"table_{k:02d}", "status": "succeeded", "records_synced": k} for k in range(20)]
    for start in range(0, 10_000, 2_000):
        post(
            store,
            *(
                job(f"j{n}", connection=f"connection-{n:05d}", finished_at="2026-04-06T08:01:00Z", streams=streams)
                for n in range(start, start + 2_000)
            ),
        )
    renderer = renderer_for(store)
    renderer.body()  # the first scrape renders and keeps every connection's lines

    tracemalloc.start()
    try:
        chunks, _ = renderer.render(None)
        size = largest = 0
        for chunk in chunks:
            size += len(chunk)
            largest = max(largest, len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    store.close()

    assert size > 100_000_000  # about a million samples
    assert largest < 2 * CHUNK_BYTES
    assert peak < size / 20


def test_a_scrape_leaves_the_cyclic_collector_on_for_the_rest_of_the_process(small_budget: Store) -> None:
    seen: list[bool] = []

    class Watching(ScrapeRenderer):
        def render_connection(self, part: ConnectionPart, writer: LineWriter) -> tuple[tuple[bytes, ...], int]:
            seen.append(gc.isenabled())
            return super().render_connection(part, writer)

    Watching(settings(), small_budget.metrics.versions, small_budget.metrics.snapshot).body()

    assert seen and all(seen)


@pytest.mark.parametrize("server_worker", [True, False], ids=["a server worker", "any other process"])
def test_only_a_server_workers_first_render_freezes_what_it_keeps(small_budget: Store, server_worker: bool) -> None:
    renderer = ScrapeRenderer(
        settings(), small_budget.metrics.versions, small_budget.metrics.snapshot, freeze_first_render=server_worker
    )
    gc.unfreeze()
    try:
        renderer.body()
        after_first = gc.get_freeze_count()
        gc.unfreeze()
        post(small_budget, job("again", connection="HubSpot → BigQuery", finished_at="2026-04-06T11:00:00Z"))
        renderer.body()

        assert (after_first > 0, gc.get_freeze_count()) == (server_worker, 0)
    finally:
        gc.unfreeze()
