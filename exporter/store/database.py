"""The connection and transaction layer every backend provides, and the SQL both speak.

A backend (:mod:`.sqlite`, :mod:`.postgres`) is the only code that opens
connections, begins and commits. It hands the shared store code a :class:`Tx`
for one read or one write transaction; that code writes its SQL once, with
``?`` placeholders, in the subset both SQLite and PostgreSQL understand, and
asks the backend's :class:`Dialect` for the few fragments that differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Protocol, TypeVar

T = TypeVar("T")
#: Runs several requests' items in one transaction, returning each one's result (see :mod:`.groupcommit`).
Merge = Callable[["Tx", list[Any]], list[Any]]

#: Bound parameters per statement, well below either engine's limit.
MAX_PARAMS: Final = 500


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses (results come back through ``RETURNING``, not ``rowcount``:
    PostgreSQL's pipeline mode knows a statement's row count only once the pipeline is synced)."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Tx(Protocol):
    """One open transaction: statements with ``?`` placeholders, rows as tuples."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> Cursor: ...


class RoleLock(Protocol):
    """A lock that lets one process among many do a background role (ship logs, purge, …)."""

    def acquire(self) -> bool:
        """Take the lock if it is free (or already ours); never waits."""
        ...

    def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """The SQL fragments that differ between the engines."""

    name: str
    greatest_function: str  # the larger of two values: SQLite's two-argument max(), PostgreSQL's greatest()
    position_function: str  # where a substring starts (0: absent): instr(haystack, needle) / strpos(...)
    fold_function: str  # case folding inside SQL, matched by fold() in Python
    fold: Callable[[str], str]
    unindexed_prefix: str  # keeps SQLite's planner (no statistics) off an index; PostgreSQL needs none

    def greatest(self, left: str, right: str) -> str:
        return f"{self.greatest_function}({left}, {right})"

    def contains_folded(self, haystack: str) -> str:
        """A condition: the case-folded ``haystack`` contains the next parameter (already folded)."""
        return f"{self.position_function}({self.fold_function}({haystack}), ?) > 0"

    def unindexed(self, column: str) -> str:
        return self.unindexed_prefix + column


class Database(Protocol):
    """Connections, transactions and the durable group commit of one backend."""

    dialect: Dialect
    #: Whether other replicas may share the database (then one of them exposes the store's metrics).
    replicated: bool
    #: This process's replica: its host and server process id.
    replica: str

    def read(self) -> AbstractContextManager[Tx]:
        """A read transaction: one consistent view of the store."""
        ...

    def submit(self, work: Callable[[Tx], T], *, merge: Merge | None = None, item: object = None) -> T:
        """Run ``work`` in a write transaction and commit it durably before returning its result.

        ``merge`` and ``item``: concurrent requests of one kind may run as one
        (see :mod:`.groupcommit`).

        Writes are serialised (one writer at a time, across processes and
        replicas), so the read-modify-write of the aggregates never races.
        Errors of the engine come out as :class:`~.errors.StoreError`.
        """
        ...

    def explain(self, sql: str, params: Sequence[object]) -> list[str]:
        """The engine's plan for a query, one step per line."""
        ...

    def size_bytes(self) -> int | None:
        """What the store takes on disk, when the backend can tell."""
        ...

    def role_lock(self, role: str) -> RoleLock:
        """The lock that makes one process at a time do ``role``."""
        ...

    def role_holders(self, tx: Tx) -> dict[str, str]:
        """Each background role and the replica holding it, as the holders recorded them."""
        ...

    def check_ready(self) -> None:
        """Raise :class:`~.errors.StoreError` unless the store can be read and written."""
        ...

    def schema_version(self) -> int:
        """The store's schema version as stored, numbered alike on all backends (:data:`.migrations.SCHEMA_VERSION`)."""
        ...

    def close(self) -> None: ...


def fetch_all(db: Database, sql: str, params: Sequence[object] = ()) -> list[Any]:
    """The rows of one query, read in a transaction of its own."""
    with db.read() as tx:
        return tx.execute(sql, params).fetchall()


def chunks(items: Sequence[T], size: int = MAX_PARAMS) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def marks(count: int) -> str:
    """``?, ?, …``: placeholders for ``count`` values."""
    return ", ".join("?" * count)


def upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """An INSERT that replaces the other columns of an existing row with the same key."""
    return Upsert(table, tuple(columns), tuple(key)).sql(1)


@dataclass(frozen=True, slots=True)
class Upsert:
    """Rows written with few statements: a row whose key is stored replaces that row's ``update`` columns.

    Many rows go in one multi-row ``INSERT … VALUES (…), (…) ON CONFLICT …``
    (both engines): one statement instead of one per row. Keys must not repeat
    within one :meth:`write`.
    """

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    update: tuple[str, ...] | None = None  # None: every column but the key
    computed: tuple[tuple[str, str], ...] = ()  # (column, SQL): a value computed in the statement, not a parameter

    @property
    def parameters(self) -> int:
        """Parameters per row."""
        return len(self.columns) - len(self.computed)

    def sql(self, rows: int) -> str:
        return _upsert_sql(self, rows)

    def write(self, tx: Tx, rows: Sequence[Sequence[object]]) -> None:
        """Write ``rows`` (parameters in column order, computed columns left out)."""
        for chunk in chunks(rows, max(1, MAX_PARAMS // self.parameters)):
            tx.execute(self.sql(len(chunk)), [value for row in chunk for value in row])


@lru_cache(maxsize=1024)
def _upsert_sql(self: Upsert, rows: int) -> str:
    computed = dict(self.computed)
    row = "(" + ", ".join(computed.get(c, "?") for c in self.columns) + ")"
    update = self.update if self.update is not None else tuple(c for c in self.columns if c not in self.key)
    action = f"UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in update)}" if update else "NOTHING"
    return (
        f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES {', '.join([row] * rows)}"
        f" ON CONFLICT ({', '.join(self.key)}) DO {action}"
    )
