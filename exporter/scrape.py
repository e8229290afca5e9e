"""The ``/metrics`` body: streamed, each connection's lines kept until the connection changes.

10,000 connections × 20 streams is over a million samples, about 140 MB of
text. Rendering that afresh for every scrape takes seconds and holds the body
in memory several times over, yet between two scrapes almost nothing changes.
So each connection's lines, family by family, are kept as bytes together with
the connection's version (the store moves it whenever anything its series
show changes) and its jobs in progress; a scrape reads the versions,
re-renders only the connections that moved, and streams the families in order,
joining the kept pieces a chunk at a time. Concurrent scrapes in one process
take turns to bring the pieces up to date (the second finds nothing left to do)
and then stream the same pieces.

The lines come from the collector the library's encoders use
(:meth:`.SyncJobCollector.connection_families`), rendered as ``generate_latest``
renders them, and the family headers come from the library itself: the body is
byte for byte what ``generate_latest`` (or, when asked for, the OpenMetrics
encoder) writes for the same data, followed by ``calabi_exporter_series``.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from .collector import CONNECTION_FAMILIES, ConnectionPart, SyncJobCollector, connection_parts
from .exposition import LineWriter
from .model import OVERFLOW
from .store import MetricsSnapshot
from .store.records import ReplicaView

CHUNK_BYTES: Final = 256 * 1024  # what the body is written in: large enough to keep the syscalls few
RENDER_BATCH: Final = 256  # connections rendered together (see ScrapeRenderer._render)
SERIES_HELP: Final = "Samples in this scrape, this one included: the exporter's share of Prometheus' series."
_EOF: Final = b"# EOF\n"

Active = tuple[tuple[str, tuple[int, float]], ...]


@dataclass(frozen=True, slots=True)
class _Piece:
    """One connection's rendered lines, per family of :data:`CONNECTION_FAMILIES`."""

    version: int
    active: Active
    part: ConnectionPart
    lines: tuple[bytes, ...]
    samples: int


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything one scrape streams, fixed when it starts."""

    pieces: list[_Piece]
    overflow: _Piece | None
    exporter: Sequence[Metric]
    samples: int  # every sample but calabi_exporter_series


@dataclass(slots=True)
class _Families:
    """Metric objects yielding a fixed list, for the library's encoders."""

    metrics: Sequence[Metric] = field(default_factory=list)

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def _key(active: dict[str, tuple[int, float]]) -> Active:
    return tuple(sorted(active.items()))


class ScrapeRenderer:
    """Builds ``/metrics`` bodies for one process; thread-safe."""

    def __init__(
        self,
        collector: SyncJobCollector,
        versions: Callable[[], dict[str, int]],
        snapshot: Callable[..., MetricsSnapshot],
        *,
        replica_view: Callable[[], ReplicaView] = lambda: ReplicaView(""),
        freeze_first_render: bool = False,
        runtime: Sequence[Collector] = (),
    ) -> None:
        """``versions()``: each connection with series of its own and its version;
        ``snapshot(only=names)``: the store's metrics snapshot, restricted to those connections;
        ``replica_view()``: whether this replica exposes the store's metrics (one of several sharing it does);
        ``freeze_first_render``: the process is a server worker, whose first render belongs to its
        start-up (see :meth:`_render`); ``runtime``: collectors of the serving process itself
        (``process_*``, ``python_*``), appended to every scrape."""
        self._collector = collector
        self._versions = versions
        self._snapshot = snapshot
        self._replica_view = replica_view
        self._lock = threading.Lock()
        self._pieces: dict[str, _Piece] = {}
        self._headers: dict[bool, tuple[bytes, ...]] = {}
        self._freeze_first_render = freeze_first_render
        self._runtime = runtime

    def render(self, accept: str | None) -> tuple[Iterator[bytes], str]:
        """The body (in chunks) and its content type for a scrape with this ``Accept`` header."""
        _, content_type = choose_encoder(accept or "")
        openmetrics = content_type.startswith("application/openmetrics-text")
        plan = self._refresh()
        return self._stream(plan, openmetrics), content_type if openmetrics else CONTENT_TYPE_PLAIN_0_0_4

    def body(self, accept: str | None = None) -> bytes:
        """The whole body at once (for tests and tools; a scrape streams)."""
        chunks, _ = self.render(accept)
        return b"".join(chunks)

    def _refresh(self) -> _Plan:
        """Bring the kept pieces up to date (one scrape at a time) and fix what this scrape streams."""
        view = self._replica_view()
        replica = [*self._collector.replica_families(view), *(m for c in self._runtime for m in c.collect())]
        if not view.exposes_store:  # another replica shows the store: a sum over replicas stays exact
            return _Plan([], None, replica, sum(len(metric.samples) for metric in replica))
        with self._lock:
            versions = self._versions()
            stale = [name for name, version in versions.items() if self._stale(name, version)]
            snap = self._snapshot(only=None if len(stale) == len(versions) else stale)
            active: dict[str, dict[str, tuple[int, float]]] = {}
            for entry in snap.active:
                active.setdefault(entry.connection, {})[entry.status] = (entry.count, entry.oldest_since)
            loaded = {part.name: part for part in connection_parts(snap)}
            overflow = loaded.pop(OVERFLOW, None)
            changed: list[tuple[ConnectionPart, int]] = []
            for name in versions:
                now_active = active.get(name, {})
                part = loaded.get(name)
                if part is not None:  # read just now: its version is the one read with its data
                    version = part.agg.version if part.agg is not None else versions[name]
                else:
                    kept = self._pieces.get(name)
                    if kept is None or kept.active == _key(now_active):
                        continue  # unchanged (or forgotten since the versions were read)
                    part, version = replace(kept.part), kept.version  # only its jobs in progress moved
                part.active = now_active
                changed.append((part, version))
            first = self._freeze_first_render and not self._pieces  # a worker's first render: start-up
            for piece in self._render([part for part, _ in changed], [v for _, v in changed], freeze=first):
                self._pieces[piece.part.name] = piece
            for name in [name for name in self._pieces if name not in versions]:
                del self._pieces[name]  # forgotten, or past the budget since
            # Jobs in progress of connections forgotten since they started: few, rendered at every scrape.
            orphans = [part for name, part in loaded.items() if name not in versions]
            pieces = sorted(
                [*self._pieces.values(), *self._render(orphans, [0] * len(orphans))], key=lambda p: p.part.name
            )
            overflow_piece = None if overflow is None else self._render([overflow], [0])[0]
            exporter = [*replica, *self._collector.exporter_families(snap)]
        samples = sum(piece.samples for piece in pieces) + (overflow_piece.samples if overflow_piece else 0)
        samples += sum(len(metric.samples) for metric in exporter)
        return _Plan(pieces, overflow_piece, exporter, samples)

    def _stale(self, name: str, version: int) -> bool:
        piece = self._pieces.get(name)
        return piece is None or piece.version != version

    def _render(
        self, parts: Sequence[ConnectionPart], versions: Sequence[int], *, freeze: bool = False
    ) -> list[_Piece]:
        """Render ``parts`` into pieces, :data:`RENDER_BATCH` connections at a time.

        A first scrape renders every connection; in batches, the library's sample
        objects of only a few hundred connections exist at once, beside the kept bytes.
        ``freeze`` (the first render, part of a worker's start-up like the
        ``gc.freeze()`` after loading): what each batch keeps is frozen too, so the
        collections its allocations trigger do not walk the growing cache again
        (a third of that render's time).
        """
        writer = LineWriter()
        out: list[_Piece] = []
        for start in range(0, len(parts), RENDER_BATCH):
            batch = parts[start : start + RENDER_BATCH]
            families, ends = self._collector.connection_families(batch)
            starts = [0] * len(families)
            for part, version, part_ends in zip(batch, versions[start : start + RENDER_BATCH], ends, strict=True):
                lines = []
                for index, family in enumerate(families):
                    samples = family.samples[starts[index] : part_ends[index]]
                    lines.append("".join(writer.line(s.name, s.labels, s.value, s.timestamp) for s in samples).encode())
                count = sum(end - begin for begin, end in zip(starts, part_ends, strict=True))
                out.append(_Piece(version, _key(part.active), part, tuple(lines), count))
                starts = part_ends
            if freeze:
                gc.freeze()
        return out

    def _header_lines(self, openmetrics: bool) -> tuple[bytes, ...]:
        """Each family's ``# HELP`` and ``# TYPE`` lines, as the library writes them for that format."""
        headers = self._headers.get(openmetrics)
        if headers is None:
            encode = generate_openmetrics if openmetrics else generate_latest
            headers = tuple(encode(_Families([family.metric()])).removesuffix(_EOF) for family in CONNECTION_FAMILIES)
            self._headers[openmetrics] = headers
        return headers

    def _stream(self, plan: _Plan, openmetrics: bool) -> Iterator[bytes]:
        buffer: list[bytes] = []
        size = 0
        for index, header in enumerate(self._header_lines(openmetrics)):
            buffer.append(header)
            for piece in plan.pieces:
                lines = piece.lines[index]
                if lines:
                    buffer.append(lines)
                    size += len(lines)
                    if size >= CHUNK_BYTES:
                        yield b"".join(buffer)
                        buffer, size = [], 0
            if plan.overflow is not None:
                buffer.append(plan.overflow.lines[index])
        encode = generate_openmetrics if openmetrics else generate_latest
        buffer.append(encode(_Families(plan.exporter)).removesuffix(_EOF))
        buffer.append(
            f"# HELP calabi_exporter_series {SERIES_HELP}\n# TYPE calabi_exporter_series gauge\n".encode()
            + LineWriter().line("calabi_exporter_series", {}, float(plan.samples + 1)).encode()
        )
        if openmetrics:
            buffer.append(_EOF)
        yield b"".join(buffer)
