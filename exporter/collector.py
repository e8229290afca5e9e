"""The metric families of :mod:`.metric_families` as a prometheus_client collector.

``/metrics`` is written by :mod:`.scrape` straight from the family table; this
collector builds the library's objects from the same table, so that
``generate_latest`` over it is the reference the scrape is held to byte for
byte (and ``get_sample_value`` works in tests and tools).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from prometheus_client.core import Metric, Sample
from prometheus_client.registry import Collector

from .connection_parts import ConnectionPart, connection_parts
from .exposition import library_family
from .metric_families import (
    CONNECTION_FAMILIES,
    REPLICA_FAMILIES,
    STORE_FAMILIES,
    Family,
    Row,
    ScrapeSettings,
    Thresholds,
)
from .store import MetricsSnapshot
from .store.records import ReplicaView
from .timeutil import Clock, system_clock

__all__ = ["ConnectionPart", "SyncJobCollector", "Thresholds", "library_metric"]

S = TypeVar("S")


def library_metric(family: Family[Any], rows: Iterable[Row]) -> Metric:
    """The family with ``rows`` as prometheus_client samples."""
    metric = library_family(family)
    name = family.base_name + ("_total" if family.kind == "counter" else "")
    for suffix, values, value in rows:
        metric.samples.append(
            Sample(name + suffix, dict(zip(family.sample_labels(suffix), values, strict=True)), value)
        )
    return metric


def _shown(families: Sequence[Family[S]], source: S, settings: ScrapeSettings) -> Iterator[Metric]:
    for family in families:
        rows = family.samples(source, settings)
        if rows is not None:
            yield library_metric(family, rows)


class SyncJobCollector(Collector):
    """Yields every ``calabi_sync_*`` and ``calabi_exporter_*`` family from one store snapshot."""

    def __init__(
        self,
        snapshot: Callable[[], MetricsSnapshot],
        thresholds: Thresholds,
        *,
        clock: Clock = system_clock,
        s3_export: bool = False,
        webhook_endpoints: Sequence[str] = (),
        streams_exposed: Callable[[str], bool] = lambda _connection: True,
        pollers: Sequence[str] = (),
    ) -> None:
        """``s3_export`` and ``webhook_endpoints``: the features whose metrics are exposed (configured ones only).

        ``streams_exposed(connection)``: whether its per-stream series are shown (``per_stream_metrics``).
        """
        self.snapshot = snapshot
        self.settings = ScrapeSettings(
            thresholds, clock, s3_export, tuple(webhook_endpoints), streams_exposed, tuple(pollers)
        )

    def describe(self) -> list[Metric]:
        # Describing must not touch the store: registration happens at start-up.
        return []

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        parts = connection_parts(snap)
        for family in CONNECTION_FAMILIES:
            rows = (row for part in parts for row in family.samples(part, self.settings) or ())
            yield library_metric(family, rows)
        yield from _shown(REPLICA_FAMILIES, ReplicaView(""), self.settings)
        yield from _shown(STORE_FAMILIES, snap, self.settings)
