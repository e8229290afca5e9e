"""The store's tables, declared once for every engine, and the one list of migrations.

A table is data: typed columns in logical kinds, a key, indexes, seed rows.
The record tables take their columns from the records themselves (``jobs`` from
:class:`~..model.Job`, ``streams`` from :class:`~..model.StreamResult`,
``log_lines`` from :class:`~..joblogs.LogLine`, the aggregates from
:class:`~..aggregates.ConnectionAgg` and :class:`~..aggregates.StreamAgg`), plus
the columns only the store keeps. Each engine renders the declaration with its
own :class:`Rendering` (:mod:`.sqlite_schema`, :mod:`.postgres_schema`).

At open, :func:`migrate` brings any store up to date in the transaction (and,
on PostgreSQL, under the lock) that opens it:

1. a missing table is made, and a declared column an existing table lacks is
   added when it may be (nullable, or with a default): adding a field to a
   record is the whole change;
2. the seed rows that are missing are written;
3. each numbered step from the store's version on runs (:data:`MIGRATIONS`):
   backfills and anything else that is more than a new column;
4. missing indexes are made, and the version is written.

Both engines report one version, :data:`SCHEMA_VERSION`. SQLite stores
counted 1 to 4 in ``PRAGMA user_version``; PostgreSQL counted 1 and 2 on its
own in ``calabi_schema``, both with every change of version 4, so its stores
read as 4 (:data:`.postgres_schema.LEGACY_VERSIONS`) and take step 4 like SQLite's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from typing import Final, Protocol

from ..aggregates import ConnectionAgg, StreamAgg
from ..joblogs import LogLine
from ..model import ACTIVE_STATUSES, FAILED, FINISHED_STATUSES, Job, StreamResult
from .database import Tx
from .errors import StoreError

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


@dataclass(frozen=True, slots=True)
class Step:
    """What brings a store of one version to the next, in the SQL both engines speak.

    It runs after the declared tables and columns were made (so it only fills
    them in) and before the indexes.
    """

    why: str
    statements: tuple[str, ...] = ()


#: ``MIGRATIONS[n]`` brings a store of version ``n`` to ``n + 1`` (a new store gets the whole schema at once).
MIGRATIONS: Final = {
    1: Step("jobs remember the S3 export batch holding them (jobs.export_batch: a new column only)"),
    2: Step(
        "jobs are listed by job_time, known for every job; export batches know their newest job and whether the"
        " purge froze them; the index of jobs waiting for export is made only while export is on",
        (
            "UPDATE jobs SET job_time = coalesce(created_at, started_at, finished_at, first_seen)",
            "DROP INDEX IF EXISTS jobs_to_export",
            "UPDATE export_batches SET newest_finished = coalesce("
            "(SELECT max(finished_at) FROM jobs WHERE export_batch = export_batches.id), oldest_finished)",
        ),
    ),
    3: Step(
        "every connection known before the series budget keeps its series, however many there are"
        " (connections.admitted defaults to true)",
        ("UPDATE meta SET value = (SELECT count(*) FROM connections) WHERE key = 'admitted_connections'",),
    ),
    4: Step("one schema and one version for SQLite and PostgreSQL (PostgreSQL's own versions 1 and 2 read as 4)"),
}
SCHEMA_VERSION: Final = max(MIGRATIONS) + 1


@dataclass(frozen=True, slots=True)
class Rendering:
    """How one engine spells the declaration: its column types and the little that differs in DDL."""

    engine: str
    types: Mapping[Kind, str]
    identity: str  # the whole definition after the name of an identity key column
    flag_values: tuple[str, str]  # false, true
    without_rowid: bool  # whether to keep SQLite's hint


def tables(engine: str) -> tuple[Table, ...]:
    """The tables a store on ``engine`` has."""
    return tuple(table for table in TABLES if engine in table.engines)


def column_sql(rendering: Rendering, column: Column, *, inline_key: bool = False) -> str:
    """A column's definition; ``inline_key``: the table's only key column, declared with it."""
    if column.kind is Kind.IDENTITY:
        return f"{column.name} {rendering.identity}"
    parts = [column.name, rendering.types[column.kind]]
    if inline_key:
        parts.append("PRIMARY KEY")
    elif not column.nullable:
        parts.append("NOT NULL")
    if column.default is not None:
        value = rendering.flag_values[column.default] if column.kind is Kind.FLAG else str(column.default)
        parts.append(f"DEFAULT {value}")
    if column.unique:
        parts.append("UNIQUE")
    return " ".join(parts)


def create_table(rendering: Rendering, table: Table) -> str:
    inline = len(table.key) == 1
    lines = [column_sql(rendering, c, inline_key=inline and c.name == table.key[0]) for c in table.columns]
    if not inline:
        lines.append(f"PRIMARY KEY ({', '.join(table.key)})")
    rowid = " WITHOUT ROWID" if table.without_rowid and rendering.without_rowid else ""
    return f"CREATE TABLE IF NOT EXISTS {table.name} (\n    " + ",\n    ".join(lines) + f"\n){rowid}"


def add_column(rendering: Rendering, table: Table, column: Column) -> str:
    return f"ALTER TABLE {table.name} ADD COLUMN {column_sql(rendering, column)}"


def create_index(table: Table, index: Index) -> str:
    where = f" WHERE {index.where}" if index.where else ""
    return f"CREATE INDEX IF NOT EXISTS {index.name} ON {table.name} ({', '.join(index.columns)}){where}"


def seed_rows() -> str:
    """The counters every store has, written where missing (``ON CONFLICT``: both engines)."""
    values = ", ".join(f"('{key}', 0)" for key in META_KEYS)
    return f"INSERT INTO meta (key, value) VALUES {values} ON CONFLICT (key) DO NOTHING"


@dataclass(frozen=True, slots=True)
class Layout:
    """What a store holds now: each table's columns, and the names of its indexes."""

    columns: Mapping[str, frozenset[str]]
    indexes: frozenset[str]


def plan(rendering: Rendering, layout: Layout, version: int, features: Iterable[str] = ()) -> list[str]:
    """The statements that bring a store of ``version`` holding ``layout`` up to :data:`SCHEMA_VERSION`.

    ``version`` 0 is a new store: it gets the whole schema and no step. The order is
    tables and columns, seed rows, the numbered steps, indexes (see the module's docstring).
    """
    if version > SCHEMA_VERSION:
        raise StoreError(f"schema version {version} is newer than this exporter (it knows up to {SCHEMA_VERSION})")
    on = set(features)
    statements = []
    for table in tables(rendering.engine):
        have = layout.columns.get(table.name)
        if have is None:
            statements.append(create_table(rendering, table))
            continue
        for column in table.columns:
            if column.name in have:
                continue
            if not column.addable:
                raise StoreError(
                    f"{table.name}.{column.name} is missing and cannot be added to rows stored before it"
                    " (NOT NULL without a default): declare a default, or make it nullable"
                )
            statements.append(add_column(rendering, table, column))
    statements.append(seed_rows())
    steps = [MIGRATIONS[step] for step in range(version, SCHEMA_VERSION)] if version else []
    statements += [statement for step in steps for statement in step.statements]
    for table in tables(rendering.engine):
        for index in table.indexes:
            wanted = not index.feature or index.feature in on
            if wanted and (steps or index.name not in layout.indexes):  # a step may have dropped one
                statements.append(create_index(table, index))
    return statements


class SchemaStore(Protocol):
    """Where one engine keeps the version, and how it reads a store's layout."""

    rendering: Rendering

    def read_layout(self, tx: Tx) -> Layout: ...

    def read_version(self, tx: Tx) -> int:
        """The store's version in :data:`MIGRATIONS`' numbering (0: a new store)."""
        ...

    def write_version(self, tx: Tx, version: int) -> None: ...


def migrate(tx: Tx, engine: SchemaStore, features: Iterable[str] = ()) -> int:
    """Bring the store up to date in ``tx``; the version it had before (0: it was new)."""
    version = engine.read_version(tx)
    statements = plan(engine.rendering, engine.read_layout(tx), version, features)
    for statement in statements:
        tx.execute(statement)
    if version != SCHEMA_VERSION:
        engine.write_version(tx, SCHEMA_VERSION)
    return version
