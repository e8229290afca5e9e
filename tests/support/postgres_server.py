"""A real PostgreSQL on a free loopback port, in a temporary directory, for the store's PostgreSQL tests.

The server binaries are Debian's (``/usr/lib/postgresql/<major>/bin``, the newest
installed), or those of ``$PG_BIN``; without them the PostgreSQL tests skip and say so.
PostgreSQL refuses to run as root, so under root the cluster belongs to the
``postgres`` user and every server command runs as that user. The cluster
trades durability for speed (``fsync=off``): the tests check behaviour, not
crash safety of the disk.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import psycopg

PG_USER: Final = "postgres"


def postgres_bin() -> tuple[Path | None, str]:
    """The directory of ``initdb`` and ``pg_ctl``, or None and why there is none."""
    explicit = os.environ.get("PG_BIN")
    candidates = [explicit] if explicit else sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major)
    for candidate in reversed(candidates):
        if candidate and os.access(Path(candidate) / "initdb", os.X_OK):
            return Path(candidate), ""
    if explicit:
        return None, f"PG_BIN={explicit} has no initdb"
    return None, "no PostgreSQL server: apt-get install postgresql (or set PG_BIN)"


def _major(path: str) -> int:
    version = Path(path).parent.name
    return int(version) if version.isdigit() else 0


#: A cluster that need not survive a crash lives in memory when there is room: each test's database is
#: a copy of some thousand files, and removing hundreds of them from a disk at the end takes seconds.
MEMORY_DIRECTORY: Final = Path("/dev/shm")
MEMORY_NEEDED: Final = 8 * 1024**3


def memory_directory() -> str | None:
    """``/dev/shm`` when it has room for a session's databases, else None (the system's temporary directory)."""
    try:
        return str(MEMORY_DIRECTORY) if shutil.disk_usage(MEMORY_DIRECTORY).free >= MEMORY_NEEDED else None
    except OSError:
        return None


class PostgresServer:
    """One throwaway cluster; each test gets a database of its own (:meth:`new_database`)."""

    def __init__(
        self,
        bin_dir: Path,
        port: int,
        *,
        durable: bool = False,
        listen_addresses: str = "127.0.0.1",
        hba: Sequence[str] = (),
    ) -> None:
        """``durable``: PostgreSQL's own defaults (fsync, synchronous commit), as a benchmark needs.

        ``listen_addresses`` and ``hba`` (lines added to ``pg_hba.conf``) open the server to
        clients that are not on loopback, such as a pod on a container network.
        """
        self.bin_dir = bin_dir
        self.durable = durable
        self.listen_addresses = listen_addresses
        self.hba = tuple(hba)
        self.port = port
        self._names = itertools.count(1)
        self._lock = threading.Lock()
        self._store_template: str | None = None
        self._template_lock = threading.Lock()
        self._as_root = os.geteuid() == 0
        self.directory = Path(tempfile.mkdtemp(prefix="calabi-pg-", dir=None if durable else memory_directory()))
        if self._as_root:
            user = pwd.getpwnam(PG_USER)
            os.chown(self.directory, user.pw_uid, user.pw_gid)
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        argv = [str(self.bin_dir / command[0]), *command[1:]]
        if self._as_root:
            argv = ["runuser", "-u", PG_USER, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=self.directory)
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stderr or result.stdout}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return ""

    def start(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", PG_USER, "-E", "UTF8", "--locale=C.UTF-8", "--auth=trust", "--no-sync"
        )  # fmt: skip
        if self.hba:
            with (self.data / "pg_hba.conf").open("a", encoding="utf-8") as hba:
                hba.writelines(f"{line}\n" for line in self.hba)
        self.restart()

    def restart(self) -> None:
        """Start the cluster made by :meth:`start` again (after :meth:`crash`); its data is recovered from the WAL."""
        options = f"-c listen_addresses={self.listen_addresses} -p {self.port} -k {self.directory}"
        options += " -c max_connections=300"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start", "-o", options)

    def crash(self) -> None:
        """Stop the server as a crash would (``-m immediate``: no checkpoint, every session cut), keeping its data."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "60", "stop")

    def new_database(self, template: str = "template1") -> str:
        """The URL of a new database: empty, or a copy of ``template`` (which no one may be connected to)."""
        with self._lock:
            name = f"test_{next(self._names)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")  # type: ignore[arg-type]
        return self.url(name)

    def new_store_database(self) -> str:
        """The URL of a new database holding a new store, copied from one the exporter created once.

        Copying a database is one statement where creating the store's schema is
        some forty: most PostgreSQL tests want a new store, not the migration.
        """
        with self._template_lock:
            if self._store_template is None:
                from calabi_exporter.store import Store

                url = self.new_database()
                Store.postgres(url).close()
                self._store_template = url.rsplit("/", 1)[1]
                self._wait_until_unused(self._store_template)
        return self.new_database(template=self._store_template)

    def _wait_until_unused(self, database: str) -> None:
        """Wait until the server has ended the sessions of a closed store (it does so a moment after the client)."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for _ in range(100):  # bounded: 10 s
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)).fetchone()
                if row is not None and row[0] == 0:
                    return
                time.sleep(0.1)
        raise RuntimeError(f"database {database} still has sessions after its store closed")

    def stop(self) -> None:
        try:
            self.crash()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
