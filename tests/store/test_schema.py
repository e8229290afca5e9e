"""One schema for both backends: a store of every earlier version, of either backend, opens into it.

The old stores are made from the DDL each earlier version left in git
history (``tests/data/schemas/``), with a few rows. Each engine's catalogue
is read back (``sqlite_master``/``PRAGMA``, ``information_schema``/``pg_index``)
and normalised to the logical kinds of :mod:`calabi_exporter.store.schema`.
"""

from __future__ import annotations

import ast
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from calabi_exporter.model import parse_job
from calabi_exporter.store import Store, StoreError
from calabi_exporter.store import schema as schema_module
from calabi_exporter.store.migrations import SCHEMA_VERSION, Layout, plan
from calabi_exporter.store.postgres_schema import RENDERING as POSTGRES_RENDERING
from calabi_exporter.store.rows import CONNECTION_COLUMNS, JOB_UPSERT, STREAM_UPSERT
from calabi_exporter.store.schema import TABLES, Kind, tables
from calabi_exporter.store.schema_ddl import seed_rows
from calabi_exporter.store.sqlite import DB_FILENAME
from calabi_exporter.store.sqlite_schema import RENDERING as SQLITE_RENDERING

from tests.support.paths import DATA, ROOT
from tests.support.postgres_server import PostgresServer

SCHEMAS = DATA / "schemas"
STORE_PACKAGE = ROOT / "exporter" / "store"

#: What each engine's catalogue can tell of a logical kind (SQLite keeps flags and numbers as INTEGER).
AS_SEEN = {
    "sqlite": {Kind.FLAG: "integer", Kind.NUMBER: "integer"},
    "postgres": {Kind.NUMBER: "real"},
}
SQLITE_TYPES = {"TEXT": "text", "INTEGER": "integer", "REAL": "real"}
POSTGRES_TYPES = {
    "text": "text",
    "bigint": "integer",
    "integer": "integer",
    "double precision": "real",
    "boolean": "flag",
}


@dataclass(frozen=True)
class Described:
    """A store's schema as its engine reports it, in logical kinds."""

    #: table -> column -> (kind, nullable, default)
    columns: dict[str, dict[str, tuple[str, bool, int | None]]]
    keys: dict[str, tuple[str, ...]]
    unique: dict[str, set[str]]
    #: index -> (table, columns, condition as the engine keeps it)
    indexes: dict[str, tuple[str, tuple[str, ...], str]]
    #: SQLite's tables stored in key order, without a rowid (a hint PostgreSQL has no use for)
    without_rowid: set[str]

    def portable(self) -> tuple[Any, ...]:
        """What both engines must agree on: all but the text of partial indexes' conditions."""
        indexes = {name: (table, columns, bool(where)) for name, (table, columns, where) in self.indexes.items()}
        return self.columns, self.keys, self.unique, indexes, self.without_rowid


def _default(text: str | None) -> int | None:
    if text is None:
        return None
    return {"true": 1, "false": 0}.get(text.lower()) if not text.lstrip("-").isdigit() else int(text)


def describe_sqlite(path: Path) -> Described:
    db = sqlite3.connect(path)
    try:
        columns: dict[str, dict[str, tuple[str, bool, int | None]]] = {}
        keys: dict[str, tuple[str, ...]] = {}
        unique: dict[str, set[str]] = {}
        without_rowid = set()
        for table, sql in db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
        ):
            found = {}
            key = []
            for _, name, kind, notnull, default, pk in db.execute(f"PRAGMA table_info({table})"):
                logical = SQLITE_TYPES[kind]
                if pk and kind == "INTEGER" and "AUTOINCREMENT" in sql:
                    logical = "identity"
                found[name] = (logical, not (notnull or pk), _default(default))
                if pk:
                    key.append((pk, name))
            columns[table] = found
            if sql.rstrip().endswith("WITHOUT ROWID"):
                without_rowid.add(table)
            keys[table] = tuple(name for _, name in sorted(key))
            unique[table] = {
                str(db.execute(f"PRAGMA index_info({index})").fetchone()[2])
                for _, index, _, origin, _ in db.execute(f"PRAGMA index_list({table})")
                if origin == "u"
            }
        indexes = {
            name: (
                table,
                tuple(str(row[2]) for row in db.execute(f"PRAGMA index_info({name})")),
                " ".join(sql.partition(" WHERE ")[2].split()),
            )
            for name, table, sql in db.execute(
                "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
        return Described(columns, keys, unique, indexes, without_rowid)
    finally:
        db.close()


def describe_postgres(url: str) -> Described:
    with psycopg.connect(url) as conn:
        columns: dict[str, dict[str, tuple[str, bool, int | None]]] = {}
        for table, name, kind, nullable, default, identity in conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity"
            " FROM information_schema.columns WHERE table_schema = current_schema() AND table_name <> 'calabi_schema'"
        ):
            logical = "identity" if identity == "YES" else POSTGRES_TYPES[kind]
            columns.setdefault(table, {})[name] = (logical, nullable == "YES", _default(default))
        keys: dict[str, tuple[str, ...]] = {table: () for table in columns}
        unique: dict[str, set[str]] = {table: set() for table in columns}
        for table, kind, column, _ in conn.execute(
            "SELECT tc.table_name, tc.constraint_type, k.column_name, k.ordinal_position"
            " FROM information_schema.table_constraints tc JOIN information_schema.key_column_usage k"
            " ON k.constraint_schema = tc.constraint_schema AND k.constraint_name = tc.constraint_name"
            " WHERE tc.table_schema = current_schema() AND tc.constraint_type IN ('PRIMARY KEY', 'UNIQUE')"
            " ORDER BY tc.table_name, k.ordinal_position"
        ):
            if kind == "PRIMARY KEY":
                keys[table] += (column,)
            else:
                unique[table].add(column)
        indexes = {
            name: (table, tuple(names), where or "")
            for name, table, names, where in conn.execute(
                "SELECT i.relname, t.relname,"
                " (SELECT array_agg(a.attname ORDER BY k.n) FROM unnest(x.indkey) WITH ORDINALITY k(attnum, n)"
                "  JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum),"
                " pg_get_expr(x.indpred, x.indrelid)"
                " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
                " WHERE t.relnamespace = current_schema()::regnamespace"
                " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"
            )
        }
        return Described(columns, keys, unique, indexes, set())


def declared(engine: str, features: tuple[str, ...] = ()) -> Described:
    """The schema as :mod:`~calabi_exporter.store.schema` declares it, as ``engine``'s catalogue would show it."""
    rendering = SQLITE_RENDERING if engine == "sqlite" else POSTGRES_RENDERING
    seen = AS_SEEN[engine]
    own = tables(rendering.engine)
    return Described(
        {
            t.name: {
                c.name: (seen.get(c.kind, c.kind.value), c.nullable, c.default if c.kind is not Kind.IDENTITY else None)
                for c in t.columns
            }
            for t in own
        },
        {t.name: t.key for t in own},
        {t.name: {c.name for c in t.columns if c.unique} for t in own},
        {
            i.name: (t.name, i.columns, i.where)
            for t in own
            for i in t.indexes
            if not i.feature or i.feature in features
        },
        {t.name for t in own if t.without_rowid and rendering.without_rowid},
    )


@dataclass
class Backend:
    """Old stores, new stores and what their catalogues say, on one engine."""

    name: str
    open: Callable[[str], Store]  # where -> the store opened by this exporter
    make_old: Callable[[str, str], None]  # where, fixture SQL -> an old store made by hand
    describe: Callable[[str], Described]
    execute: Callable[[str, str], list[tuple[Any, ...]]]  # where, SQL -> rows, outside any store
    place: Callable[[], str]  # a new, empty place for a store


@pytest.fixture
def engine(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Backend]:
    opened: list[Store] = []
    if backend == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres")

        def run(url: str, sql: str) -> list[tuple[Any, ...]]:
            with psycopg.connect(url, autocommit=True) as conn:
                cursor = conn.execute(sql.encode())
                return cursor.fetchall() if cursor.description else []

        def open_postgres(url: str) -> Store:
            opened.append(Store.postgres(url))
            return opened[-1]

        yield Backend(backend, open_postgres, run, describe_postgres, run, server.new_database)
    else:
        places = iter(range(1000))

        def run_sqlite(where: str, sql: str) -> list[tuple[Any, ...]]:
            db = sqlite3.connect(Path(where) / DB_FILENAME, isolation_level=None)
            try:
                return db.execute(sql).fetchall()
            finally:
                db.close()

        def make_old(where: str, sql: str) -> None:
            Path(where).mkdir(mode=0o700)
            db = sqlite3.connect(Path(where) / DB_FILENAME)
            db.executescript(sql)
            db.close()

        def open_sqlite(where: str) -> Store:
            opened.append(Store.sqlite(Path(where)))
            return opened[-1]

        def describe(where: str) -> Described:
            return describe_sqlite(Path(where) / DB_FILENAME)

        yield Backend(
            backend, open_sqlite, make_old, describe, run_sqlite, lambda: str(tmp_path / f"store-{next(places)}")
        )
    for store in opened:
        store.close()


FIXTURES = [
    pytest.param("sqlite", "sqlite-v1.sql", id="sqlite-1"),
    pytest.param("sqlite", "sqlite-v2.sql", id="sqlite-2"),
    pytest.param("sqlite", "sqlite-v3.sql", id="sqlite-3"),
    pytest.param("sqlite", "sqlite-v4.sql", id="sqlite-4"),
    pytest.param("sqlite", "sqlite-v5.sql", id="sqlite-5"),
    pytest.param("postgres", "postgresql-v1.sql", id="postgresql-1"),
    pytest.param("postgres", "postgresql-v2.sql", id="postgresql-2"),
    pytest.param("postgres", "postgresql-v5.sql", id="postgresql-5"),
]
COUNTED = ("jobs", "streams", "log_lines", "connections", "stream_aggs", "export_batches")


def counts(engine: Backend, where: str, names: set[str]) -> dict[str, int]:
    return {table: engine.execute(where, f"SELECT count(*) FROM {table}")[0][0] for table in COUNTED if table in names}


@pytest.mark.parametrize(("backend", "fixture"), FIXTURES)
def test_a_store_of_an_earlier_version_opens_into_the_schema_of_a_new_store_with_its_rows(
    engine: Backend, fixture: str
) -> None:
    old, new = engine.place(), engine.place()
    engine.make_old(old, (SCHEMAS / fixture).read_text())
    before = counts(engine, old, set(engine.describe(old).columns))

    migrated = engine.open(old)
    engine.open(new)

    assert engine.describe(old) == engine.describe(new)
    assert migrated.database.schema_version() == SCHEMA_VERSION
    assert counts(engine, old, set(before)) == before
    assert engine.execute(old, "SELECT job_id, job_time, export_batch FROM jobs ORDER BY job_id") == [
        ("job-1", 1775460000.0, 1 if "export_batches" in before else None),
        ("job-2", 1775460300.0, None),
    ]
    assert engine.execute(old, "SELECT newest_finished FROM export_batches") == (
        [(1775460120.0,)] if "export_batches" in before else []
    )
    assert engine.execute(old, "SELECT connection, admitted FROM connections ORDER BY connection") == [
        ("hubspot", True if engine.name == "postgres" else 1),
        ("salesforce", True if engine.name == "postgres" else 1),
    ]
    assert engine.execute(old, "SELECT value FROM meta WHERE key = 'admitted_connections'") == [(2,)]
    # Jobs and connections stored before platforms were known are the product's own.
    assert engine.execute(old, "SELECT DISTINCT platform FROM jobs") == [("calabi",)]
    assert engine.execute(old, "SELECT DISTINCT platform FROM connections") == [("calabi",)]
    assert migrated.reads.job("job-1") is not None
    assert [line.message for line in migrated.reads.log_lines("job-1")] == ["Syncing stream: Account"]


@pytest.mark.every_backend
def test_a_new_store_has_the_declared_schema_and_reports_the_one_version(engine: Backend) -> None:
    where = engine.place()
    store = engine.open(where)

    assert engine.describe(where).portable() == declared(engine.name).portable()
    assert store.database.schema_version() == SCHEMA_VERSION == 6


def test_both_backends_declare_the_same_tables_but_postgresql_s_roles_and_commit_marks() -> None:
    assert {t.name for t in tables("postgresql")} - {t.name for t in tables("sqlite")} == {
        "replica_roles",
        "commit_marks",
    }
    assert {t.name for t in tables("sqlite")} <= {t.name for t in tables("postgresql")}


@pytest.mark.every_backend
def test_a_record_column_missing_from_a_stored_table_is_added_when_the_store_opens(engine: Backend) -> None:
    where = engine.place()
    engine.open(where).close()
    engine.execute(where, "ALTER TABLE jobs DROP COLUMN job_url")

    store = engine.open(where)
    store.ingest.jobs(
        [parse_job({"job_id": "j", "connection_name": "c", "status": "running", "job_url": "u"})], endpoint="jobs"
    )

    assert engine.describe(where).columns["jobs"]["job_url"] == ("text", True, None)
    assert store.reads.job("j").job_url == "u"  # type: ignore[union-attr]


@pytest.mark.every_backend
def test_a_store_of_a_newer_version_is_refused(engine: Backend) -> None:
    where = engine.place()
    engine.open(where).close()
    newer = SCHEMA_VERSION + 1
    engine.execute(
        where,
        f"PRAGMA user_version = {newer}" if engine.name == "sqlite" else f"UPDATE calabi_schema SET version = {newer}",
    )

    with pytest.raises(StoreError, match=f"schema version {newer} is newer than this exporter"):
        engine.open(where)


def test_a_store_already_up_to_date_only_gets_its_missing_counters() -> None:
    for rendering in (SQLITE_RENDERING, POSTGRES_RENDERING):
        own = tables(rendering.engine)
        layout = Layout(
            {t.name: frozenset(c.name for c in t.columns) for t in own},
            frozenset(i.name for t in own for i in t.indexes),
        )
        assert plan(rendering, layout, SCHEMA_VERSION) == [seed_rows()]


def test_a_record_field_that_cannot_be_a_column_is_named() -> None:
    @dataclass
    class Odd:
        tags: list[str]

    with pytest.raises(TypeError, match=r"Odd.tags: list\[str\] is not a column"):
        schema_module.record_columns(Odd)


def test_the_columns_the_store_writes_are_the_declared_ones() -> None:
    declared_columns = {t.name: {c.name for c in t.columns} for t in TABLES}

    assert set(JOB_UPSERT.columns) | {"export_batch"} == declared_columns["jobs"]
    assert set(STREAM_UPSERT.columns) == declared_columns["streams"]
    assert set(CONNECTION_COLUMNS) == declared_columns["connections"] == declared_columns["connection_overflow"]


def test_the_record_tables_take_their_columns_from_the_records() -> None:
    jobs = next(t for t in TABLES if t.name == "jobs")
    streams = next(t for t in TABLES if t.name == "streams")

    assert jobs.column("attempt") == schema_module.Column("attempt", Kind.INTEGER)
    assert jobs.column("status") == schema_module.Column("status", Kind.TEXT, nullable=False)
    assert streams.column("duration_seconds") == schema_module.Column("duration_seconds", Kind.REAL)


@pytest.mark.parametrize(
    "module", ["schema.py", "schema_ddl.py", "migrations.py", "sqlite_schema.py", "postgres_schema.py"]
)
def test_the_schema_is_rendered_without_regular_expressions(module: str) -> None:
    tree = ast.parse((STORE_PACKAGE / module).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}

    assert "re" not in imported
