"""The embedded default backend: one SQLite file in WAL mode, in the data directory.

This module owns every SQLite connection and transaction. Every write is one
``BEGIN IMMEDIATE`` transaction (requests sharing it through group commit),
so a crash never leaves a counter that disagrees with the jobs, and several
worker processes can share one file: the write lock serialises them, readers
never wait in WAL mode. Background roles go to one process at a time through
``flock`` on files next to the database.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final, TypeVar

from .database import Dialect, Merge, Tx
from .errors import StoreError, StoreFull
from .groupcommit import GroupCommitter
from .migrations import migrate
from .schema import S3_EXPORT
from .sqlite_schema import SQLITE_SCHEMA

DB_FILENAME: Final = "calabi-exporter.sqlite3"
LOCK_FILENAME: Final = "calabi-exporter.lock"
#: SQLite's result code for "database or disk is full".
SQLITE_FULL: Final = 13
#: The data directory and every file in it belong to the service user alone: another local user
#: who could open the lock file could hold its ``flock`` and stop every write.
PRIVATE_DIR: Final = 0o700
PRIVATE_FILE: Final = 0o600

T = TypeVar("T")
log = logging.getLogger(__name__)


def _casefold(text: str | None) -> str | None:
    return None if text is None else text.casefold()


SQLITE: Final = Dialect(
    name="sqlite",
    greatest_function="max",
    position_function="instr",
    fold_function="casefold",  # Python's str.casefold, registered on every connection
    fold=str.casefold,
    unindexed_prefix="+",
)


def store_error(error: Exception, context: str = "") -> StoreError:
    """The StoreError for a database or file error: :class:`StoreFull` when the disk is full."""
    message = f"{context}: {error}" if context else str(error)
    full = getattr(error, "sqlite_errorcode", None) == SQLITE_FULL or getattr(error, "errno", None) == errno.ENOSPC
    return StoreFull(message) if full else StoreError(message)


def open_private(path: Path) -> int:
    """Open (or create) one of the store's files for reading and writing, private to this user."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & ~PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)
    except OSError:
        os.close(fd)
        raise
    return fd


def make_private(data_dir: Path) -> None:
    """Create ``data_dir`` private to this user, or make an existing one so.

    SQLite creates its ``-wal`` and ``-shm`` files with the database file's
    mode, so the database file is created private before SQLite opens it, and
    files an older version left readable are tightened. A directory this user
    does not own (a Kubernetes volume's root, owned by root with the pod's
    ``fsGroup``) keeps its mode: the files in it are private all the same,
    unless other users may write to it (and so replace them), which stops
    start-up, as does a shared directory such as ``/tmp``.
    """
    data_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    found = data_dir.stat()
    mode = stat.S_IMODE(found.st_mode)
    if mode & stat.S_ISVTX:
        raise StoreError(
            f"{data_dir} is a directory shared by every user (mode {mode:04o}, like /tmp); "
            "give the exporter a directory of its own"
        )
    if found.st_uid == os.geteuid():
        if mode & ~PRIVATE_DIR:
            os.chmod(data_dir, PRIVATE_DIR)
            log.warning(
                "data_dir %s was open to other users (mode %04o); made private (%04o)", data_dir, mode, PRIVATE_DIR
            )
    elif mode & stat.S_IWOTH:
        raise StoreError(
            f"{data_dir}: other users may write to it (mode {mode:04o}) and it belongs to uid "
            f"{found.st_uid}, not to this user (uid {os.geteuid()}), so it cannot be made private; "
            "give the exporter a directory of its own"
        )
    os.close(open_private(data_dir / DB_FILENAME))
    for entry in data_dir.glob("calabi-exporter*"):
        if entry.is_file() and not entry.is_symlink() and stat.S_IMODE(entry.stat().st_mode) & ~PRIVATE_FILE:
            os.chmod(entry, PRIVATE_FILE)


class DirectoryLock:
    """A non-blocking exclusive ``flock`` on ``data_dir/filename``, held until released."""

    def __init__(self, data_dir: Path, filename: str) -> None:
        self._path = Path(data_dir) / filename
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = open_private(self._path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the lock
            self._fd = None


@contextmanager
def _savepoint(db: sqlite3.Connection) -> Iterator[None]:
    """One request inside a shared transaction: undone alone when it fails."""
    db.execute("SAVEPOINT request")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK TO request")
        db.execute("RELEASE request")
        raise
    db.execute("RELEASE request")


class SQLiteDatabase:
    """:class:`~.database.Database` on one SQLite file.

    One connection per thread (SQLite connections must not be shared across
    threads); ``synchronous`` trades the last transactions before a power loss
    (``normal``) against an fsync per request (``full``).
    """

    dialect = SQLITE
    replicated = False  # one data directory, one host: every worker process exposes the same metrics

    def __init__(
        self, data_dir: Path, *, synchronous: str = "full", s3_export: bool = False, replica: str = ""
    ) -> None:
        """``s3_export``: add the index of jobs waiting for export (once; stores without export do not pay for it)."""
        if synchronous not in ("full", "normal"):
            raise ValueError("synchronous must be 'full' or 'normal'")
        self.replica = replica
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_FILENAME
        self._synchronous = synchronous
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock_fds: list[int] = []
        self._group = GroupCommitter(self._write, _savepoint)
        self._lock = threading.Lock()
        try:
            make_private(self.data_dir)
            with self._write() as tx:
                self._migrate(tx, s3_export)
        except (sqlite3.Error, OSError) as error:
            raise store_error(error, f"cannot open the store at {self.path}") from error

    def _migrate(self, db: sqlite3.Connection, s3_export: bool) -> None:
        """Bring the schema up to date (see :mod:`.migrations`), in the transaction that opens the store."""
        try:
            migrate(db, SQLITE_SCHEMA, (S3_EXPORT,) if s3_export else ())
        except StoreError as error:
            raise StoreError(f"{self.path}: {error}") from error

    def schema_version(self) -> int:
        with self.read() as tx:
            return SQLITE_SCHEMA.read_version(tx)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # check_same_thread off only so that close() may close every thread's connection;
            # each connection is still used by the one thread that opened it.
            db = sqlite3.connect(self.path, isolation_level=None, timeout=60.0, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
            db.execute("PRAGMA busy_timeout = 60000")
            db.create_function("casefold", 1, _casefold, deterministic=True)
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    def _lock_fd(self) -> int:
        fd: int | None = getattr(self._local, "lock_fd", None)
        if fd is None:
            fd = open_private(self.path.with_name(LOCK_FILENAME))
            self._local.lock_fd = fd
            with self._lock:
                self._lock_fds.append(fd)
        return fd

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, writers queued on an ``flock`` first.

        SQLite's own busy handler polls with sleeps of up to 100 ms, so under
        many concurrent writers most of the time goes to sleeping on a lock
        that is already free. A blocking ``flock`` on a file next to the
        database (one open file per thread, so it excludes threads as well as
        worker processes) wakes the next writer as soon as the last commits;
        ``BEGIN IMMEDIATE`` then finds the database free.
        """
        db = self.connection()
        fd = self._lock_fd()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    @contextmanager
    def read(self) -> Iterator[Tx]:
        db = self.connection()
        try:
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as error:
            raise store_error(error) from error

    def submit(self, work: Callable[[Tx], T], *, merge: Merge | None = None, item: object = None) -> T:
        try:
            return self._group.submit(work, merge=merge, item=item)
        except sqlite3.Error as error:
            raise store_error(error) from error

    def explain(self, sql: str, params: Sequence[object]) -> list[str]:
        with self.read() as tx:
            return [str(row[3]) for row in tx.execute("EXPLAIN QUERY PLAN " + sql, params)]

    def size_bytes(self) -> int:
        """The database, its WAL and shared-memory file, on disk."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with suppress(OSError):  # the WAL and shm files come and go
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def role_lock(self, role: str) -> DirectoryLock:
        return DirectoryLock(self.data_dir, f"calabi-exporter-{role}.lock")

    def role_holders(self, tx: Tx) -> dict[str, str]:
        return {}  # flock files do not say who holds them; one replica holds them all

    def check_ready(self) -> None:
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('ready_check', 0)"
                    " ON CONFLICT (key) DO UPDATE SET value = meta.value + 1"
                )
        except sqlite3.Error as error:
            raise store_error(error, f"store at {self.path} is not writable") from error

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
            for fd in self._lock_fds:
                os.close(fd)
            self._lock_fds.clear()
        self._local = threading.local()
