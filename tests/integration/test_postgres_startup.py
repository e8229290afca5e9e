"""Starting on PostgreSQL: an outage is waited out, then status 1; a configuration mistake is status 2 at once.

Either way the one line says why, in the words of the client or the server,
and never shows the password.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.postgres_server import PostgresServer, postgres_bin
from tests.support.processes import environment_without_calabi, free_port
from tests.support.real_components import missing

PASSWORD = "s3cret-Pass-4-test"
#: Longer than any test runs: a command that should end at once but waits instead runs into the subprocess timeout.
NEVER = "600"


def run(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "calabi_exporter", *args],
        env={**environment_without_calabi(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


@pytest.fixture
def password_user(postgres: PostgresServer) -> Iterator[str]:
    """A role that must log in with :data:`PASSWORD` (the session's server trusts every other role)."""
    user = f"calabi_{secrets.token_hex(4)}"
    with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{PASSWORD}'")  # type: ignore[arg-type]
    hba = postgres.data / "pg_hba.conf"
    original = hba.read_text(encoding="utf-8")
    hba.write_text(f"host all {user} 127.0.0.1/32 scram-sha-256\n{original}", encoding="utf-8")
    with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    yield user
    hba.write_text(original, encoding="utf-8")
    with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        pytest.param(
            "postgresql://{user}:wrong-{password}@127.0.0.1:{port}/{database}",
            'connection failed: connection to server at "127.0.0.1", port {port} failed:'
            ' FATAL: password authentication failed for user "{user}"',
            id="a wrong password",
        ),
        pytest.param(
            "postgresql://{user}:{password}@127.0.0.1:{port}/{database}?sslmode=bogus",
            'connection is bad: invalid sslmode value: "bogus"',
            id="an sslmode libpq does not know",
        ),
        pytest.param(
            "postgresql://{user}:{password}@127.0.0.1:{port}/no_such_database",
            'connection failed: connection to server at "127.0.0.1", port {port} failed:'
            ' FATAL: database "no_such_database" does not exist',
            id="an unknown database",
        ),
    ],
)
@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_a_database_that_refuses_the_configuration_ends_the_start_at_once_with_status_2_and_its_reason(
    postgres: PostgresServer, password_user: str, tmp_path: Path, command: str, url: str, reason: str
) -> None:
    database = database_name(postgres.new_database())
    with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {database} OWNER TO {password_user}")  # type: ignore[arg-type]
    facts = {"user": password_user, "password": PASSWORD, "port": postgres.port, "database": database}
    where = f"127.0.0.1:{postgres.port}/{'no_such_database' if 'no_such' in url else database}"

    result = run(
        command,
        env={"CALABI_DATABASE_URL": url.format(**facts), "CALABI_DATABASE_CONNECT_TIMEOUT_SECONDS": NEVER},
        cwd=tmp_path,
    )

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"calabi-exporter: config error: database_url: cannot connect to the database at {where}:"
        f" {reason.format(**facts)}"
    ]


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_a_database_that_stays_down_ends_the_start_with_status_1_after_the_wait(tmp_path: Path, command: str) -> None:
    port = free_port()
    url = f"postgresql://calabi:{PASSWORD}@127.0.0.1:{port}/calabi"

    result = run(
        command, env={"CALABI_DATABASE_URL": url, "CALABI_DATABASE_CONNECT_TIMEOUT_SECONDS": "2"}, cwd=tmp_path
    )

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines()[-1] == (
        f"calabi-exporter: the store is unavailable: the database at 127.0.0.1:{port}/calabi did not answer"
        " within 2 s (database_connect_timeout_seconds): connection failed: connection to server at"
        f' "127.0.0.1", port {port} failed: Connection refused Is the server running on that host and'
        " accepting TCP/IP connections?"
    )
    assert "waiting for the database at" in result.stderr  # each attempt is logged while it waits
    assert PASSWORD not in result.stderr


def test_a_database_that_comes_up_while_the_start_waits_is_used(tmp_path: Path) -> None:
    bin_dir, why = postgres_bin()
    if bin_dir is None:
        missing(why)
    server = PostgresServer(bin_dir, free_port())
    env = {
        "CALABI_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{server.port}/postgres",
        "CALABI_DATABASE_CONNECT_TIMEOUT_SECONDS": NEVER,
    }
    with subprocess.Popen(
        [sys.executable, "-m", "calabi_exporter", "check-config"],
        env={**environment_without_calabi(), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    ) as check:
        assert check.stderr is not None
        try:
            first_line = check.stderr.readline()  # the check waits for a database that is not there yet
            server.start()
            status = check.wait(timeout=120)
        finally:
            check.kill()
            server.stop()
        rest = check.stderr.read()
    assert "waiting for the database at 127.0.0.1:" in first_line
    assert status == 0, first_line + rest
