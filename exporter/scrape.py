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

A server worker renders every connection once before it serves
(:meth:`ScrapeRenderer.warm`, from gunicorn's worker hook), so its first scrape
is as quick as any other, well within Prometheus' scrape timeout.

The lines are written from the family table (:mod:`.metric_families`) by
:class:`.exposition.LineWriter`; the body is byte for byte what
``generate_latest`` (or, when asked for, the OpenMetrics encoder) writes for
the collector built from the same table, followed by ``calabi_exporter_series``.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from .connection_parts import ConnectionPart, connection_parts
from .exposition import LineWriter, header
from .metric_families import (
    CONNECTION_FAMILIES,
    REPLICA_FAMILIES,
    SERIES_FAMILY,
    STORE_FAMILIES,
    Family,
    ScrapeSettings,
)
from .model import OVERFLOW
from .store import MetricsSnapshot
from .store.records import ReplicaView

CHUNK_BYTES: Final = 256 * 1024  # what the body is written in: large enough to keep the syscalls few
FREEZE_BATCH: Final = 256  # connections rendered between two gc.freeze() of a first render (see _render)
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
    replica: list[tuple[Family[Any], bytes]]  # this replica's families: (family, sample lines)
    runtime: Sequence[Metric]  # the serving process's own (process_*, python_*), written by the library
    store: list[tuple[Family[Any], bytes]]  # the store's own figures
    samples: int  # every sample but calabi_exporter_series


class _Metrics:
    """Metric objects yielding a fixed list, for the library's encoders."""

    def __init__(self, metrics: Sequence[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Sequence[Metric]:
        return self._metrics


def _key(active: dict[str, tuple[int, float]]) -> Active:
    return tuple(sorted(active.items()))


class ScrapeRenderer:
    """Builds ``/metrics`` bodies for one process; thread-safe."""

    def __init__(
        self,
        settings: ScrapeSettings,
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
        self._settings = settings
        self._versions = versions
        self._snapshot = snapshot
        self._replica_view = replica_view
        self._lock = threading.Lock()
        self._pieces: dict[str, _Piece] = {}
        self._headers: dict[tuple[str, bool], bytes] = {}
        self._freeze_first_render = freeze_first_render
        self._runtime = runtime
        self._warm = False

    @property
    def is_warm(self) -> bool:
        """Whether every connection's lines have been rendered once (by :meth:`warm` or a scrape)."""
        return self._warm

    def warm(self) -> None:
        """Render and keep every connection's lines now, so that the next scrape re-renders only what moved.

        A server worker calls this before it serves: rendering 10,000 connections
        × 20 streams takes seconds, which the first scrape would otherwise pay.
        Rendered whichever replica shows the store at the moment: the role may move here later.
        Once warm (by this or a scrape), nothing is left to do.
        """
        with self._lock:
            if not self._warm:
                self._update()

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

    def render_connection(self, part: ConnectionPart, writer: LineWriter) -> tuple[tuple[bytes, ...], int]:
        """One connection's lines, per family of :data:`CONNECTION_FAMILIES`, and how many samples."""
        lines: list[bytes] = []
        count = 0
        for family in CONNECTION_FAMILIES:
            text, n = writer.lines(family, family.samples(part, self._settings) or ())
            lines.append(text.encode())
            count += n
        return tuple(lines), count

    def _refresh(self) -> _Plan:
        """Bring the kept pieces up to date (one scrape at a time) and fix what this scrape streams."""
        view = self._replica_view()
        writer = LineWriter()
        replica = self._shown(REPLICA_FAMILIES, view, writer)
        runtime = [metric for collector in self._runtime for metric in collector.collect()]
        samples = sum(len(metric.samples) for metric in runtime)
        if not view.exposes_store:  # another replica shows the store: a sum over replicas stays exact
            return _Plan([], None, [(f, lines) for f, lines, _ in replica], runtime, [], samples + _count(replica))
        with self._lock:
            snap, loaded = self._update()
            # Jobs in progress of connections forgotten since they started: few, rendered at every scrape.
            orphans = [part for name, part in loaded.items() if name != OVERFLOW]
            pieces = sorted([*self._pieces.values(), *self._render(orphans, [0] * len(orphans))], key=_name)
        overflow = loaded.get(OVERFLOW)
        overflow_piece = None if overflow is None else self._render([overflow], [0])[0]
        store = self._shown(STORE_FAMILIES, snap, writer)
        samples += _count(replica) + _count(store) + sum(piece.samples for piece in pieces)
        samples += overflow_piece.samples if overflow_piece else 0
        return _Plan(
            pieces,
            overflow_piece,
            [(f, lines) for f, lines, _ in replica],
            runtime,
            [(f, lines) for f, lines, _ in store],
            samples,
        )

    def _update(self) -> tuple[MetricsSnapshot, dict[str, ConnectionPart]]:
        """Re-render the connections whose version or jobs in progress moved (the caller holds the lock).

        Returns the snapshot read (every connection's on the first call, only the moved
        ones' after) and the parts it holds besides those kept: the overflow's and
        those of connections forgotten while their jobs ran.
        """
        versions = self._versions()
        stale = [name for name, version in versions.items() if self._stale(name, version)]
        snap = self._snapshot(only=None if len(stale) == len(versions) else stale)
        active: dict[str, dict[str, tuple[int, float]]] = {}
        for entry in snap.active:
            active.setdefault(entry.connection, {})[entry.status] = (entry.count, entry.oldest_since)
        loaded = {part.name: part for part in connection_parts(snap)}
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
        self._warm = True
        return snap, {name: part for name, part in loaded.items() if name not in versions}

    def _stale(self, name: str, version: int) -> bool:
        piece = self._pieces.get(name)
        return piece is None or piece.version != version

    def _render(
        self, parts: Sequence[ConnectionPart], versions: Sequence[int], *, freeze: bool = False
    ) -> list[_Piece]:
        """Render ``parts`` into pieces.

        ``freeze`` (the first render, part of a worker's start-up like the
        ``gc.freeze()`` after loading): what is kept is frozen every
        :data:`FREEZE_BATCH` connections, so the collections its allocations
        trigger do not walk the growing cache again (a third of that render's time).
        """
        writer = LineWriter()
        out: list[_Piece] = []
        for index, (part, version) in enumerate(zip(parts, versions, strict=True)):
            lines, count = self.render_connection(part, writer)
            out.append(_Piece(version, _key(part.active), part, lines, count))
            if freeze and index % FREEZE_BATCH == FREEZE_BATCH - 1:
                gc.freeze()
        if freeze:
            gc.freeze()
        return out

    def _shown(
        self, families: Sequence[Family[Any]], source: object, writer: LineWriter
    ) -> list[tuple[Family[Any], bytes, int]]:
        """The families shown (their producer gave rows) with their lines and sample counts."""
        out: list[tuple[Family[Any], bytes, int]] = []
        for family in families:
            rows = family.samples(source, self._settings)
            if rows is not None:
                text, count = writer.lines(family, rows)
                out.append((family, text.encode(), count))
        return out

    def _header(self, family: Family[Any], openmetrics: bool) -> bytes:
        key = (family.name, openmetrics)
        found = self._headers.get(key)
        if found is None:
            found = self._headers[key] = header(family, openmetrics=openmetrics)
        return found

    def _stream(self, plan: _Plan, openmetrics: bool) -> Iterator[bytes]:
        buffer: list[bytes] = []
        size = 0
        for index, family in enumerate(CONNECTION_FAMILIES):
            buffer.append(self._header(family, openmetrics))
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
        for family, lines in plan.replica:
            buffer += (self._header(family, openmetrics), lines)
        if plan.runtime:
            encode = generate_openmetrics if openmetrics else generate_latest
            buffer.append(encode(_Metrics(plan.runtime)).removesuffix(_EOF))
        for family, lines in plan.store:
            buffer += (self._header(family, openmetrics), lines)
        series, _ = LineWriter().lines(SERIES_FAMILY, SERIES_FAMILY.samples(plan.samples, self._settings) or ())
        buffer += (self._header(SERIES_FAMILY, openmetrics), series.encode())
        if openmetrics:
            buffer.append(_EOF)
        yield b"".join(buffer)


def _name(piece: _Piece) -> str:
    return piece.part.name


def _count(shown: Sequence[tuple[Family[Any], bytes, int]]) -> int:
    return sum(count for _, _, count in shown)
