"""The one list of migrations, and what brings a store of any version up to date at open.

At open, :func:`migrate` brings a store up to date in the transaction (and, on
PostgreSQL, under the lock) that opens it:

1. a missing table is made, and a declared column an existing table lacks is
   added when it may be (nullable, or with a default);
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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from ..model import DEFAULT_PLATFORM
from .database import Tx
from .errors import StoreError
from .schema import tables
from .schema_ddl import Rendering, add_column, create_index, create_table, seed_rows


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
    5: Step(
        "jobs and connections know the platform that ran them, the product's own for those stored before;"
        " the sources' webhook deliveries are counted by kind, and their pollers keep their cursors and health"
        " (new tables only)",
        (
            f"UPDATE jobs SET platform = '{DEFAULT_PLATFORM}' WHERE platform IS NULL",
            f"UPDATE connections SET platform = '{DEFAULT_PLATFORM}' WHERE platform IS NULL",
        ),
    ),
}
SCHEMA_VERSION: Final = max(MIGRATIONS) + 1


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
