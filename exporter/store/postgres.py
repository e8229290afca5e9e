"""PostgreSQL backend: one database shared by any number of exporter replicas.

This module owns every PostgreSQL connection and transaction. Writes keep the
guarantees of the embedded store: each write transaction first takes one
transaction-scoped advisory lock, so writers run one at a time across every
process and replica (the aggregates are read, changed and written back without
a race, and outbox ids grow in commit order); group commit shares that
transaction among concurrent requests of a process. Reads run in
``REPEATABLE READ`` snapshots and never wait. Background roles go to one
process at a time through session advisory locks (:class:`AdvisoryLocks`).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import lru_cache
from typing import Any, Final, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from .database import Cursor, Dialect, Merge, Tx
from .errors import StoreError, StoreFull, StoreUnavailable
from .groupcommit import GroupCommitter
from .migrations import migrate
from .postgres_schema import POSTGRES_SCHEMA
from .records import ROLES
from .schema import S3_EXPORT

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The first key of every advisory lock the exporter takes (the second says which lock).
LOCK_SPACE: Final = zlib.crc32(b"calabi-connect-exporter") & 0x7FFFFFFF
WRITE_LOCK: Final = 0
SCHEMA_LOCK: Final = 1
#: Each background role's lock number (ROLES only grows at its end, so versions side by side agree).
ROLE_LOCKS: Final = {role: 10 + index for index, role in enumerate(ROLES)}
#: The role lock's connection proves it is alive this often; a holder that cannot gives its roles up.
HEARTBEAT_SECONDS: Final = 2.0
#: A holder frozen or cut off from the database loses its session (and roles) after this long (PostgreSQL 14+).
IDLE_SESSION_TIMEOUT: Final = "8s"
#: A write transaction's first statement: the write lock, and a commit that does not wait for the disk.
_WRITE_LOCK_STATEMENT: Final = "SELECT pg_advisory_xact_lock(?, ?), set_config('synchronous_commit', 'off', true)"
#: Sessions that can commit their marks at once without waiting on each other's row (server process ids modulo this).
COMMIT_MARK_SLOTS: Final = 4096
#: The transaction after each write that commits as the server's ``synchronous_commit`` says (by default: WAL flushed).
#: PostgreSQL waits for the WAL only when a transaction has an id and wrote WAL: an upsert does both, where a
#: read such as ``txid_current()`` does not, and commits as lazily as the write before it.
_DURABLE_COMMIT_STATEMENT: Final = (
    f"INSERT INTO commit_marks (slot, commits) VALUES (pg_backend_pid() % {COMMIT_MARK_SLOTS}, 1)"
    " ON CONFLICT (slot) DO UPDATE SET commits = commit_marks.commits + 1"
).encode()
#: Cursors for statements with rows a connection keeps for its transactions (more are made as needed).
READ_CURSORS: Final = 8
#: How long one attempt to connect at start may take before it counts as failed.
CONNECT_TIMEOUT_SECONDS: Final = 10
#: Start-up waits this long before trying an unreachable database again, doubling up to the second value.
RETRY_SECONDS: Final = (0.5, 5.0)
#: What libpq and the server say when the database cannot be reached yet, which waiting may mend: down,
#: starting, restarting, its name not yet in the DNS, full. Any other refusal (a wrong password, an unknown
#: database or role, a bad ``sslmode``) is the configuration's, and trying again would not help.
_TRANSIENT: Final = re.compile(
    r"connection refused|timeout expired|timed out|no route to host|network is unreachable"
    r"|could not (?:receive|send) data|server closed the connection unexpectedly|connection reset"
    r"|failed to resolve host|name or service not known|temporary failure in name resolution"
    r"|no such file or directory|the database system is|too many clients|remaining connection slots",
    re.IGNORECASE,
)
#: A pooled connection idle this long is checked before it is lent again.
CHECK_AFTER_IDLE: Final = 5.0
#: TCP keepalives on the role connection, so a dead peer is noticed on either side within seconds.
_KEEPALIVES: Final = {
    "keepalives": 1,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": 6000,
}

POSTGRES: Final = Dialect(
    name="postgresql",
    greatest_function="greatest",
    position_function="strpos",
    fold_function="lower",
    fold=str.lower,
    unindexed_prefix="",
)


@lru_cache(maxsize=4096)
def _statement(sql: str) -> tuple[bytes, bool]:
    """The shared SQL as PostgreSQL's own (``?`` placeholders numbered ``$1``, ``$2``, …), and whether it gives rows.

    Converted once per statement text: the statements go out through raw
    cursors, which send them as they are (psycopg's own conversion is not kept
    for statements with many parameters, such as multi-row inserts).
    Rows come from a query or from a change with ``RETURNING``.
    """
    parts = sql.split("?")
    text = parts[0] + "".join(f"${number}{part}" for number, part in enumerate(parts[1:], start=1))
    head = sql.lstrip()[:7].upper()
    rows = head.startswith(("SELECT", "WITH", "EXPLAIN")) or " RETURNING " in sql.upper()
    return text.encode(), rows


class _NoRows:
    """What a statement without rows gives back: reading it is a mistake, and says so."""

    __slots__ = ()

    def _none(self) -> Any:
        raise psycopg.ProgrammingError("the statement returns no rows (add RETURNING to read them)")

    fetchone = fetchall = _none

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


_NO_ROWS: Final = _NoRows()


def store_error(error: Exception, context: str = "") -> StoreError:
    """The StoreError for a PostgreSQL error, on one line: :class:`StoreFull` when the server's disk is full."""
    message = f"{context}: {error}" if context else str(error)
    message = " ".join(message.split())
    return StoreFull(message) if isinstance(error, pg_errors.DiskFull) else StoreError(message)


class _Connection(psycopg.Connection[Any]):
    """A pooled connection with the cursors its transactions reuse, and when it was last lent.

    A new cursor starts with no adapters and looks up how to send each
    parameter again, which costs more than sending the statement; a reused
    one remembers.
    """

    last_used = 0.0
    _writer: psycopg.RawCursor[Any] | None = None
    _readers: list[psycopg.RawCursor[Any]] | None = None

    @property
    def writer(self) -> psycopg.RawCursor[Any]:
        """The cursor of every statement whose rows nobody reads."""
        if self._writer is None:
            self._writer = psycopg.RawCursor(self)
        return self._writer

    def reader(self, index: int) -> psycopg.RawCursor[Any]:
        """The cursor of a transaction's ``index``-th statement with rows (in pipeline mode several are in flight)."""
        if index >= READ_CURSORS:
            return psycopg.RawCursor(self)
        if self._readers is None:
            self._readers = []
        while len(self._readers) <= index:
            self._readers.append(psycopg.RawCursor(self))
        return self._readers[index]


class _Tx:
    """A transaction on one connection, speaking the shared SQL.

    Each statement with rows to read gets a cursor of its own within the
    transaction (in pipeline mode several are in flight at once); the others
    (most writes) all go through the connection's ``writer``.
    """

    __slots__ = ("conn", "pipeline", "reads", "writer")

    def __init__(self, conn: _Connection, pipeline: psycopg.Pipeline | None = None) -> None:
        self.conn = conn
        self.writer = conn.writer
        self.pipeline = pipeline
        self.reads = 0

    def sync(self) -> None:
        """Wait for every statement sent so far; raises the first error among them."""
        if self.pipeline is not None:
            self.pipeline.sync()

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor:
        query, rows = _statement(sql)
        if rows:
            self.reads += 1
            return self.conn.reader(self.reads - 1).execute(query, params or None)
        self.writer.execute(query, params or None)
        return _NO_ROWS

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> Cursor:
        rows = list(rows)
        query, returns_rows = _statement(sql)
        if returns_rows:
            raise psycopg.ProgrammingError("executemany does not read rows; use execute")
        if rows:
            self.writer.executemany(query, rows)
        return _NO_ROWS


class AdvisoryLocks:
    """The background roles this process holds, as session advisory locks on one dedicated connection.

    A process killed outright loses its connection and so its roles at once; one
    frozen or cut off loses them when the server ends its idle session
    (``idle_session_timeout``) or the keepalives give up. The holder checks its
    connection every :data:`HEARTBEAT_SECONDS` and gives its roles up when the
    check fails, so two processes never both believe they hold a role for long.
    """

    def __init__(self, url: str, replica: str) -> None:
        self._url = url
        self._replica = replica
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._held: set[str] = set()
        self._checked = 0.0

    def role(self, role: str) -> AdvisoryLock:
        if role not in ROLE_LOCKS:
            raise ValueError(f"unknown background role {role!r}")
        return AdvisoryLock(self, role)

    def acquire(self, role: str) -> bool:
        with self._lock:
            try:
                conn = self._connection()
                if role in self._held:
                    return True
                taken = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_SPACE, ROLE_LOCKS[role])).fetchone()
                if not taken or not taken[0]:
                    return False
                conn.execute(
                    "INSERT INTO replica_roles (role, replica, since) VALUES (%s, %s, %s) ON CONFLICT (role)"
                    " DO UPDATE SET replica = excluded.replica, since = excluded.since",
                    (role, self._replica, time.time()),
                )
                self._held.add(role)
                log.info("this replica (%s) took the %s role", self._replica, role)
                return True
            except psycopg.Error as error:
                self._drop(f"role lock connection failed: {error}")
                return False

    def release(self, role: str) -> None:
        with self._lock:
            if role not in self._held or self._conn is None:
                return
            self._held.discard(role)
            try:
                self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_SPACE, ROLE_LOCKS[role]))
            except psycopg.Error as error:
                self._drop(f"role lock connection failed: {error}")

    def _connection(self) -> psycopg.Connection[Any]:
        """The live role connection: opened when missing, checked at most every heartbeat."""
        now = time.monotonic()
        if self._conn is not None and now - self._checked >= HEARTBEAT_SECONDS:
            self._conn.execute("SELECT 1")  # raises when the session is gone: its roles are gone with it
            self._checked = now
        if self._conn is None:
            conninfo = psycopg.conninfo.make_conninfo(
                self._url, application_name="calabi-exporter roles", **_KEEPALIVES
            )
            self._conn = psycopg.connect(conninfo, autocommit=True)
            if self._conn.info.server_version >= 140000:
                self._conn.execute(f"SET idle_session_timeout = '{IDLE_SESSION_TIMEOUT}'")
            self._checked = now
        return self._conn

    def _drop(self, reason: str) -> None:
        if self._held:
            log.warning("giving up the %s role(s): %s", ", ".join(sorted(self._held)), reason)
        self._held.clear()
        if self._conn is not None:
            with suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._held.clear()
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class AdvisoryLock:
    """One role of :class:`AdvisoryLocks` (the :class:`~.database.RoleLock` of a worker)."""

    def __init__(self, locks: AdvisoryLocks, role: str) -> None:
        self._locks = locks
        self.role = role

    def acquire(self) -> bool:
        return self._locks.acquire(self.role)

    def release(self) -> None:
        self._locks.release(self.role)


class PostgresDatabase:
    """:class:`~.database.Database` on a PostgreSQL database, through a connection pool."""

    dialect = POSTGRES
    replicated = True

    def __init__(
        self, url: str, *, replica: str, pool_size: int, connect_seconds: float, s3_export: bool = False
    ) -> None:
        """``replica``: this process's replica (host and server pid), recorded with the roles it takes.

        ``connect_seconds``: how long to keep trying a database that does not answer yet (see
        :func:`first_connection`).
        """
        self.url = url
        self.replica = replica
        self._group = GroupCommitter(self._write, _savepoint)
        self._locks = AdvisoryLocks(url, replica)
        self._pool = ConnectionPool(
            url,
            connection_class=_Connection,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"autocommit": True, "application_name": "calabi-exporter"},
            configure=_configure,
            check=self._check,
            timeout=30.0,
            name="calabi-exporter",
        )
        # One connection first: a wrong URL fails at once with the client's own reason, where the
        # pool would retry quietly and report only its timeout.
        first_connection(url, connect_seconds)
        try:
            self._pool.open(wait=True, timeout=max(connect_seconds, CONNECT_TIMEOUT_SECONDS))
            with self._pool.connection() as conn:
                self._migrate(conn, s3_export)
        except PoolTimeout as error:
            self._pool.close()
            raise StoreUnavailable(f"the database at {_where(url)} stopped answering while the store opened") from error
        except psycopg.Error as error:
            self._pool.close()
            raise store_error(error, f"cannot open the store at {_where(url)}") from error

    @staticmethod
    def _check(conn: _Connection) -> None:
        """Before a connection is lent: one not lent for a while is checked (the server may have gone), a busy one not.

        A check is a round trip; under load every connection was lent a moment
        ago, and one that broke since fails its request with a 503 and leaves the pool.
        The time is taken here, not when the connection comes back: a pool with a
        ``reset`` callback hands every returned connection to a worker thread,
        which costs each request a hop and leaves a connection in flight
        when the pool closes (its server session outlives the store).
        """
        now = time.monotonic()
        idle, conn.last_used = now - conn.last_used, now
        if idle > CHECK_AFTER_IDLE:
            ConnectionPool.check_connection(conn)

    @staticmethod
    def _migrate(conn: _Connection, s3_export: bool) -> None:
        """Bring the schema up to date (see :mod:`.migrations`); replicas starting together wait on one lock and agree.

        The write lock is taken too, so no replica writes while the schema
        changes (DDL beside running writers could deadlock with them); a schema
        already up to date is only read.
        """
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, SCHEMA_LOCK))
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, WRITE_LOCK))
            migrate(_Tx(conn), POSTGRES_SCHEMA, (S3_EXPORT,) if s3_export else ())

    def schema_version(self) -> int:
        with self.read() as tx:
            return POSTGRES_SCHEMA.read_version(tx)

    @contextmanager
    def _write(self) -> Iterator[_Tx]:
        """A write transaction in pipeline mode, holding the write lock only until it commits.

        Only reading a result (``fetchone``) waits for the server, so a request's
        inserts and updates cost one round trip between them, not one each. The
        transaction commits without waiting for its WAL to reach the disk, which
        releases the write lock for the next writer at once; then a transaction
        of its own (:data:`_DURABLE_COMMIT_STATEMENT`, committed synchronously)
        waits until the WAL up to here is on disk. Nobody is answered before
        that, so an answer still means "stored durably"; a writer that read this
        transaction's changes commits after it in the WAL, so a crash loses both
        or neither.
        """
        # BEGIN and COMMIT are sent as statements: psycopg's transaction blocks wait for the server on
        # entry and exit in pipeline mode, two round trips a transaction.
        with self._pool.connection() as conn, conn.pipeline() as pipeline:
            tx = _Tx(conn, pipeline)
            tx.writer.execute("BEGIN")
            try:
                # Waited for here, so that requests arriving meanwhile join this transaction (see groupcommit).
                tx.execute(_WRITE_LOCK_STATEMENT, (LOCK_SPACE, WRITE_LOCK)).fetchone()
                yield tx
                tx.writer.execute("COMMIT")
                tx.sync()
            except BaseException:
                _rollback(tx, "ROLLBACK")
                raise
            tx.writer.execute(_DURABLE_COMMIT_STATEMENT)
            tx.sync()

    @contextmanager
    def read(self) -> Iterator[Tx]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                conn.writer.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield _Tx(conn)
        except (psycopg.Error, PoolTimeout) as error:
            raise store_error(error) from error

    def submit(self, work: Callable[[Tx], T], *, merge: Merge | None = None, item: object = None) -> T:
        try:
            return self._group.submit(work, merge=merge, item=item)
        except (psycopg.Error, PoolTimeout) as error:
            raise store_error(error) from error

    def explain(self, sql: str, params: Sequence[object]) -> list[str]:
        with self.read() as tx:
            return [str(row[0]) for row in tx.execute("EXPLAIN " + sql, params)]

    def size_bytes(self) -> int | None:
        with self.read() as tx:
            row = tx.execute("SELECT pg_database_size(current_database())").fetchone()
        return None if row is None else int(row[0])

    def role_lock(self, role: str) -> AdvisoryLock:
        return self._locks.role(role)

    def role_holders(self, tx: Tx) -> dict[str, str]:
        return {str(role): str(replica) for role, replica in tx.execute("SELECT role, replica FROM replica_roles")}

    def check_ready(self) -> None:
        try:
            self.submit(
                lambda tx: tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('ready_check', 0)"
                    " ON CONFLICT (key) DO UPDATE SET value = meta.value + 1"
                )
            )
        except StoreError as error:
            raise type(error)(f"store at {_where(self.url)} is not writable: {error}") from error

    def close(self) -> None:
        self._locks.close()
        self._pool.close()


def _configure(conn: psycopg.Connection[Any]) -> None:
    """A new pooled connection prepares every statement at once, and keeps many prepared.

    The statements are few but come in several sizes (``IN`` lists, multi-row
    inserts); prepared, each skips parsing and planning on every later use.
    """
    conn.prepare_threshold = 0
    conn.prepared_max = 1000


@contextmanager
def _savepoint(tx: _Tx) -> Iterator[None]:
    """One request inside a shared transaction: undone alone when it fails (its statements are awaited)."""
    tx.writer.execute("SAVEPOINT request")
    try:
        yield
        tx.writer.execute("RELEASE SAVEPOINT request")
        tx.sync()
    except BaseException:
        _rollback(tx, "ROLLBACK TO SAVEPOINT request", "RELEASE SAVEPOINT request")
        raise


def _rollback(tx: _Tx, *statements: str) -> None:
    """Undo after a failure: first clear what the failure left in the pipeline, then send ``statements``.

    A rollback makes psycopg forget its prepared statements and queue a
    ``DEALLOCATE ALL`` for the server, sent after the connection's next
    statement: in pipeline mode that comes after the next statement's own
    preparation and undoes it, while psycopg still counts it prepared
    ("prepared statement … does not exist" in later requests). So the
    deallocation goes out here, behind a statement of its own that is not
    prepared, and the connection is clean for whoever uses it next.

    A connection that fails even this is broken; the pool drops it when it comes back.
    """
    with suppress(psycopg.Error):
        tx.sync()  # a statement's error surfaces here when nothing waited for it yet
    with suppress(psycopg.Error):
        for statement in statements:
            tx.writer.execute(statement)
        tx.sync()
        tx.writer.execute(b"SELECT 'deallocate prepared statements'", prepare=False)
        tx.sync()


def first_connection(url: str, wait_seconds: float) -> None:
    """Connect once, trying again for up to ``wait_seconds`` while the database is only unreachable.

    A database that is down or still starting when the exporter starts is an
    outage: :class:`~.errors.StoreUnavailable` once the wait is over. A refusal
    that trying again cannot mend (a wrong password, an unknown database, a bad
    ``sslmode``) raises :class:`~.errors.StoreError` at once, with the reason
    the client or the server gave.
    """
    deadline = time.monotonic() + wait_seconds
    delay, longest = RETRY_SECONDS
    while True:
        timeout = max(2, min(CONNECT_TIMEOUT_SECONDS, math.ceil(deadline - time.monotonic())))  # libpq's least: 2
        try:
            psycopg.connect(url, autocommit=True, connect_timeout=timeout).close()
            return
        except psycopg.Error as error:
            reason = " ".join(str(error).split())
            if not (isinstance(error, psycopg.OperationalError) and _TRANSIENT.search(reason)):
                raise StoreError(f"cannot connect to the database at {_where(url)}: {reason}") from error
            if time.monotonic() + delay > deadline:
                raise StoreUnavailable(
                    f"the database at {_where(url)} did not answer within {wait_seconds:g} s"
                    f" (database_connect_timeout_seconds): {reason}"
                ) from error
            log.warning("waiting for the database at %s, up to %g s: %s", _where(url), wait_seconds, reason)
        time.sleep(delay)
        delay = min(delay * 2, longest)


def _where(url: str) -> str:
    """Host, port and database of a URL, without the credentials."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the configured database_url"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def valid_url(url: str) -> str:
    """``url`` when it is a ``postgresql://`` connection URL psycopg can read."""
    if not re.match(r"^postgres(ql)?://", url):
        raise ValueError("must be a postgresql:// URL (empty: SQLite in data_dir)")
    try:
        psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        raise ValueError(f"is not a valid connection URL: {error}") from None
    return url
