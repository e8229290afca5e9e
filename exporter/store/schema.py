"""The store's tables, declared once for every engine.

A table is data: typed columns in logical kinds, a key, indexes, seed rows.
The record tables take their columns from the records themselves (``jobs`` from
:class:`~..model.Job`, ``streams`` from :class:`~..model.StreamResult`,
``log_lines`` from :class:`~..joblogs.LogLine`, the aggregates from
:class:`~..aggregates.ConnectionAgg` and :class:`~..aggregates.StreamAgg`), plus
the columns only the store keeps: adding a field to a record is the whole
change, the column is added to stored tables at open (:mod:`.migrations`).
Each engine spells the declaration in its own types (:mod:`.schema_ddl`,
:mod:`.sqlite_schema`, :mod:`.postgres_schema`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from typing import Final

from ..aggregates import ConnectionAgg, StreamAgg
from ..joblogs import LogLine
from ..model import ACTIVE_STATUSES, FAILED, FINISHED_STATUSES, Job, StreamResult

SQLITE: Final = "sqlite"
POSTGRESQL: Final = "postgresql"
BOTH: Final = frozenset({SQLITE, POSTGRESQL})
#: The feature that makes the index of jobs waiting for S3 export.
S3_EXPORT: Final = "s3_export"


class Kind(Enum):
    """What a column holds, whatever the engine calls it."""

    TEXT = "text"
    INTEGER = "integer"
    REAL = "real"
    FLAG = "flag"  # true or false
    NUMBER = "number"  # a counter or a time in one column (``meta``): whole numbers stay whole where the engine can
    IDENTITY = "identity"  # the key a new row is numbered with, in insertion order, never reused


@dataclass(frozen=True, slots=True)
class Column:
    """A column; ``default`` is what rows stored before it get (a flag's is 0 or 1)."""

    name: str
    kind: Kind
    nullable: bool = True
    default: int | None = None
    unique: bool = False

    @property
    def addable(self) -> bool:
        """Whether ``ALTER TABLE … ADD COLUMN`` can give it to a table that already has rows."""
        return self.nullable or self.default is not None


@dataclass(frozen=True, slots=True)
class Index:
    """An index, made at open where missing.

    A store keeps an index it has under the same name, so a changed definition
    needs a new name, or a numbered step that drops the old one.
    """

    name: str
    columns: tuple[str, ...]
    where: str = ""  # a partial index's condition, in the SQL both engines speak
    feature: str = ""  # made only while this feature is on (stores without it do not pay for it)


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    indexes: tuple[Index, ...] = ()
    #: SQLite keeps the rows in the key's order, without a rowid: for small rows looked up by a composite key.
    without_rowid: bool = False
    engines: frozenset[str] = BOTH

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


_KINDS: Final = {"str": Kind.TEXT, "int": Kind.INTEGER, "float": Kind.REAL, "bool": Kind.FLAG}


def record_columns(record: type, *, skip: Iterable[str] = (), defaults: Mapping[str, int] = {}) -> tuple[Column, ...]:
    """The columns of a record dataclass: one per field, its kind read from the annotation.

    ``str`` is text, ``int`` integer, ``float`` real, ``bool`` a flag; ``X | None`` is nullable.
    ``defaults``: the columns that a row written before them gets a value in.
    """
    skipped = set(skip)
    columns = []
    for field in fields(record):
        if field.name in skipped:
            continue
        annotation = field.type if isinstance(field.type, str) else field.type.__name__
        parts = [part.strip() for part in annotation.split("|")]
        types = [part for part in parts if part != "None"]
        if len(types) != 1 or types[0] not in _KINDS:
            raise TypeError(f"{record.__name__}.{field.name}: {annotation} is not a column (skip it or store it)")
        columns.append(Column(field.name, _KINDS[types[0]], "None" in parts, defaults.get(field.name)))
    return tuple(columns)


def _counters(*names: str) -> tuple[Column, ...]:
    return tuple(Column(name, Kind.INTEGER, nullable=False) for name in names)


_CONNECTION_COLUMNS: Final = (
    *record_columns(ConnectionAgg, skip=("jobs", "durations"), defaults={"admitted": 1, "version": 0}),
    *_counters(*(f"jobs_{status}" for status in FINISHED_STATUSES)),
    *(
        column
        for status in FINISHED_STATUSES
        for column in (Column(f"duration_counts_{status}", Kind.TEXT), Column(f"duration_sum_{status}", Kind.REAL))
    ),
)


def _quoted(values: Sequence[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


TABLES: Final = (
    Table(
        "jobs",
        (
            *record_columns(Job, skip=("streams",)),
            Column("active_since", Kind.REAL),
            Column("first_seen", Kind.REAL, nullable=False),
            Column("updated_at", Kind.REAL, nullable=False),
            Column("export_batch", Kind.INTEGER),  # the S3 export batch holding the job
            Column("job_time", Kind.REAL),  # listings' order: created, else started, else finished, else first seen
        ),
        ("job_id",),
        (
            Index("jobs_failed_by_connection", ("connection_name", "finished_at"), f"status = '{FAILED}'"),
            Index("jobs_by_finish", ("finished_at",), "finished_at IS NOT NULL"),
            Index(
                "jobs_active",
                ("status", "connection_name", "active_since"),
                f"status IN ({_quoted(ACTIVE_STATUSES)})",
            ),
            Index("jobs_by_time", ("job_time", "job_id")),
            Index("jobs_by_status_time", ("status", "job_time", "job_id")),
            Index("jobs_by_connection_time", ("connection_name", "job_time", "job_id")),
            Index("jobs_by_export_batch", ("export_batch",), "export_batch IS NOT NULL"),
            # Finished jobs not sealed into an S3 export batch yet.
            Index(
                "jobs_to_export",
                ("finished_at",),
                "finished_at IS NOT NULL AND export_batch IS NULL",
                feature=S3_EXPORT,
            ),
        ),
    ),
    Table(
        "streams",
        (
            Column("job_id", Kind.TEXT, nullable=False),
            Column("position", Kind.INTEGER, nullable=False),  # the stream's place in the job's list
            *record_columns(StreamResult),
        ),
        ("job_id", "name"),
        without_rowid=True,
    ),
    Table(
        "log_lines",
        (
            Column("id", Kind.IDENTITY, nullable=False),
            Column("job_id", Kind.TEXT, nullable=False),
            *record_columns(LogLine),
            Column("received_at", Kind.REAL, nullable=False),
            Column("dedup_key", Kind.TEXT, unique=True),  # a line sent twice is stored once
        ),
        ("id",),
        (Index("log_lines_by_job", ("job_id", "id")),),
    ),
    Table(
        "connections",
        _CONNECTION_COLUMNS,
        ("connection",),
        # The connections beyond the series budget, in the order they get a place that is freed.
        (Index("connections_waiting", ("first_seen", "connection"), "NOT admitted"),),
    ),
    # The counters of every connection beyond the series budget, added up: one row, connection "__overflow__".
    Table("connection_overflow", _CONNECTION_COLUMNS, ("connection",)),
    Table("stream_aggs", record_columns(StreamAgg), ("connection", "stream"), without_rowid=True),
    Table(
        "ingest_counts",
        (
            Column("endpoint", Kind.TEXT, nullable=False),
            Column("outcome", Kind.TEXT, nullable=False),
            *_counters("count"),
        ),
        ("endpoint", "outcome"),
        without_rowid=True,
    ),
    # Deliveries of each source's webhook by kind, those that stored no job included (tests, notices).
    Table(
        "source_notices",
        (
            Column("source", Kind.TEXT, nullable=False),
            Column("kind", Kind.TEXT, nullable=False),
            *_counters("count"),
        ),
        ("source", "kind"),
        without_rowid=True,
    ),
    # Where each source's poller is in the vendor's API (Airbyte: the updatedAt cursor; Fivetran: per
    # connection, the newest success and failure already made into jobs).
    Table(
        "source_cursors",
        (
            Column("source", Kind.TEXT, nullable=False),
            Column("key", Kind.TEXT, nullable=False),
            Column("value", Kind.TEXT, nullable=False),
            Column("updated_at", Kind.REAL, nullable=False),
        ),
        ("source", "key"),
        without_rowid=True,
    ),
    # What each connection a poller reads reports of itself (Fivetran's status, paused, schedule).
    Table(
        "connection_states",
        (
            Column("connection", Kind.TEXT, nullable=False),
            Column("states", Kind.TEXT, nullable=False),  # JSON: part -> state
            Column("paused", Kind.FLAG),
            Column("schedule_seconds", Kind.REAL),
            Column("updated_at", Kind.REAL, nullable=False),
        ),
        ("connection",),
        without_rowid=True,
    ),
    # Each poller's polls by outcome, and the time of its last good one.
    Table(
        "source_polls",
        (
            Column("source", Kind.TEXT, nullable=False),
            Column("outcome", Kind.TEXT, nullable=False),
            *_counters("count"),
        ),
        ("source", "outcome"),
        without_rowid=True,
    ),
    Table(
        "source_poll_health",
        (Column("source", Kind.TEXT, nullable=False), Column("last_success", Kind.REAL, nullable=False)),
        ("source",),
        without_rowid=True,
    ),
    Table(
        "log_counts",
        (
            Column("connection", Kind.TEXT, nullable=False),
            Column("family", Kind.TEXT, nullable=False),
            Column("key", Kind.TEXT, nullable=False),
            *_counters("count"),
        ),
        ("connection", "family", "key"),
        without_rowid=True,
    ),
    Table(
        "rejections",
        (
            Column("endpoint", Kind.TEXT, nullable=False),
            Column("field", Kind.TEXT, nullable=False),
            *_counters("count"),
        ),
        ("endpoint", "field"),
        without_rowid=True,
    ),
    Table(
        "rate_limits",
        (
            Column("connection", Kind.TEXT, nullable=False),
            Column("ratio", Kind.REAL, nullable=False),
            Column("seen_at", Kind.REAL, nullable=False),
        ),
        ("connection",),
        without_rowid=True,
    ),
    # Each connection's newest successes that are not resets, what the learning of its usual schedule and
    # volume reads (detection.py): read with its aggregate, not from the jobs, so that a batch costs no
    # query per connection. Packed pairs of finish time and records (store/rows.py), oldest first, at most 51.
    Table(
        "success_windows",
        (Column("connection", Kind.TEXT, nullable=False), Column("successes", Kind.TEXT, nullable=False)),
        ("connection",),
        without_rowid=True,
    ),
    # When each connection was last forgotten: a job from before then is not counted into its new aggregates.
    Table(
        "forgotten_connections",
        (Column("connection", Kind.TEXT, nullable=False), Column("forgotten_at", Kind.REAL, nullable=False)),
        ("connection",),
        without_rowid=True,
    ),
    # Connections each ingest token made known, per hour (limits.new_connections_per_hour).
    Table(
        "new_connections",
        (Column("token", Kind.TEXT, nullable=False), *_counters("hour", "count")),
        ("token", "hour"),
        without_rowid=True,
    ),
    Table(
        "meta",
        (Column("key", Kind.TEXT, nullable=False), Column("value", Kind.NUMBER, nullable=False)),
        ("key",),
        without_rowid=True,
    ),
    Table(
        "outbox",
        (
            Column("id", Kind.IDENTITY, nullable=False),
            Column("job_id", Kind.TEXT, nullable=False),
            Column("line_id", Kind.INTEGER),
            Column("queued_at", Kind.REAL, nullable=False),
        ),
        ("id",),
    ),
    Table(
        "dead_letters",
        (
            *_counters("outbox_id"),
            Column("job_id", Kind.TEXT, nullable=False),
            Column("line_id", Kind.INTEGER),
            Column("reason", Kind.TEXT, nullable=False),
            Column("dead_at", Kind.REAL, nullable=False),
        ),
        ("outbox_id",),
        (Index("dead_letters_by_time", ("dead_at",)),),
    ),
    Table(
        "export_batches",
        (
            Column("id", Kind.IDENTITY, nullable=False),
            Column("day", Kind.TEXT, nullable=False),
            Column("name", Kind.TEXT, nullable=False),
            Column("oldest_finished", Kind.REAL, nullable=False),
            Column("version", Kind.INTEGER, nullable=False, default=0),
            Column("exported_at", Kind.REAL),
            Column("newest_finished", Kind.REAL),
            Column(
                "frozen", Kind.FLAG, nullable=False, default=0
            ),  # the purge took some of its jobs: never uploaded again
        ),
        ("id",),
        (Index("export_batches_waiting", ("id",), "exported_at IS NULL"),),
    ),
    Table(
        "webhook_queue",
        (
            Column("id", Kind.IDENTITY, nullable=False),
            Column("endpoint", Kind.TEXT, nullable=False),
            Column("job_id", Kind.TEXT, nullable=False),
            Column("event_id", Kind.TEXT, nullable=False),
            Column("payload", Kind.TEXT, nullable=False),
            Column("created_at", Kind.REAL, nullable=False),
            Column("attempts", Kind.INTEGER, nullable=False, default=0),
            Column("next_attempt_at", Kind.REAL, nullable=False),
            Column("last_error", Kind.TEXT),
        ),
        ("id",),
        (Index("webhook_queue_by_job", ("endpoint", "job_id", "id")),),
    ),
    Table(
        "webhook_dead_letters",
        (
            *_counters("id"),
            Column("endpoint", Kind.TEXT, nullable=False),
            Column("job_id", Kind.TEXT, nullable=False),
            Column("event_id", Kind.TEXT, nullable=False),
            Column("payload", Kind.TEXT, nullable=False),
            Column("created_at", Kind.REAL, nullable=False),
            *_counters("attempts"),
            Column("reason", Kind.TEXT, nullable=False),
            Column("dead_at", Kind.REAL, nullable=False),
        ),
        ("id",),
        (Index("webhook_dead_letters_by_time", ("dead_at",)),),
    ),
    Table(
        "webhook_endpoints",
        # In backoff: new events wait until blocked_until.
        (Column("endpoint", Kind.TEXT, nullable=False), Column("blocked_until", Kind.REAL, nullable=False)),
        ("endpoint",),
        without_rowid=True,
    ),
    Table(
        "webhook_counts",
        (
            Column("endpoint", Kind.TEXT, nullable=False),
            Column("outcome", Kind.TEXT, nullable=False),
            *_counters("count"),
        ),
        ("endpoint", "outcome"),
        without_rowid=True,
    ),
    # Who holds each background role now (written by the holder when it takes the role); on SQLite, flock
    # files next to the database say who may act and nobody records the holder.
    Table(
        "replica_roles",
        (
            Column("role", Kind.TEXT, nullable=False),
            Column("replica", Kind.TEXT, nullable=False),
            Column("since", Kind.REAL, nullable=False),
        ),
        ("role",),
        engines=frozenset({POSTGRESQL}),
    ),
    # One row per slot of server processes, rewritten after every write so that its answer waits for the WAL
    # flush (see ``postgres._DURABLE_COMMIT_STATEMENT``); at most ``postgres.COMMIT_MARK_SLOTS`` rows.
    Table("commit_marks", _counters("slot", "commits"), ("slot",), engines=frozenset({POSTGRESQL})),
)

#: The store's counters in ``meta`` that every store has from the start, at 0.
META_KEYS: Final = (
    "stored_jobs",
    "outbox_cursor",
    "s3_exported_objects",
    "s3_failed_objects",
    "purged_jobs",
    "log_exported",
    "log_failed",
    "log_dead_lettered",
    "admitted_connections",
    "overflow_jobs_connection",
    "overflow_jobs_stream",
    "connections_version",
)


def tables(engine: str) -> tuple[Table, ...]:
    """The tables a store on ``engine`` has."""
    return tuple(table for table in TABLES if engine in table.engines)
