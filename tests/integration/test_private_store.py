"""The data directory and every file in it are private to the user the exporter runs as.

Another local user who could open the lock file could hold its ``flock`` and
stop every write; one who could read the database could read every job. The
data directory lives on SQLite only (PostgreSQL keeps its own files).
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from calabi_exporter.model import parse_job
from calabi_exporter.store import Store

from tests.support.clock import T0
from tests.support.exporter_process import ExporterProcess
from tests.support.jobs import job
from tests.support.processes import environment_without_calabi, free_port
from tests.support.real_components import missing

LOCK = "calabi-exporter.lock"
DATABASE = "calabi-exporter.sqlite3"
SYSTEM_PYTHON = "/usr/bin/python3"  # one that user nobody may run (the project's virtualenv may be in a private home)


@pytest.fixture
def open_parent() -> Iterator[Path]:
    """A directory every user may enter (pytest's own temporary directories are closed to them)."""
    parent = Path(tempfile.mkdtemp(prefix="calabi-private-"))
    parent.chmod(0o755)
    yield parent
    shutil.rmtree(parent)


def modes(data_dir: Path) -> dict[str, int]:
    """The permission bits of the data directory (``.``) and of every file in it."""
    found = {".": stat.S_IMODE(data_dir.stat().st_mode)}
    found.update({entry.name: stat.S_IMODE(entry.stat().st_mode) for entry in sorted(data_dir.iterdir())})
    return found


def as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as the local user ``nobody``."""
    if os.geteuid() != 0:
        missing("acting as another local user needs root")
    if not Path(SYSTEM_PYTHON).exists():
        missing(f"{SYSTEM_PYTHON} is not installed")
    return subprocess.run(
        [SYSTEM_PYTHON, "-c", code],
        user=pwd.getpwnam("nobody").pw_uid,
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )


def test_a_serving_exporters_directory_and_files_are_private_with_a_job_stored(
    exporter_process: Callable[..., ExporterProcess], open_parent: Path
) -> None:
    data_dir = open_parent / "data"
    exporter = exporter_process(data_dir=data_dir)
    stored = requests.post(
        exporter.url + "/api/v1/jobs", json=job("j1", finished_at="2026-04-06T08:01:00Z"), timeout=10
    )
    assert stored.status_code == 200

    found = modes(data_dir)

    assert {f"{DATABASE}-wal", f"{DATABASE}-shm", DATABASE, LOCK} <= found.keys()
    assert found == {".": 0o700} | {name: 0o600 for name in found if name != "."}


def test_another_local_user_can_neither_read_the_store_nor_take_its_lock(
    exporter_process: Callable[..., ExporterProcess], open_parent: Path
) -> None:
    data_dir = open_parent / "data"
    exporter_process(data_dir=data_dir)

    attempt = as_nobody(
        "import fcntl, sys\n"
        f"for name in {[LOCK, DATABASE]!r}:\n"
        "    try:\n"
        f"        fcntl.flock(open({str(data_dir)!r} + '/' + name, 'rb'), fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "    except PermissionError:\n"
        "        print(name, 'refused')\n"
    )

    assert (attempt.returncode, attempt.stdout) == (0, f"{LOCK} refused\n{DATABASE} refused\n")


def test_a_store_left_open_to_others_is_made_private_and_keeps_its_jobs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    store = Store.sqlite(data_dir)
    store.ingest.jobs([parse_job(job("j1"), latest=T0)], endpoint="jobs")
    store.close()
    data_dir.chmod(0o755)
    for entry in data_dir.iterdir():
        entry.chmod(0o644)

    with caplog.at_level(logging.WARNING, logger="calabi_exporter.store.sqlite"):
        reopened = Store.sqlite(data_dir)
    kept = reopened.reads.job("j1")
    reopened.close()

    found = modes(data_dir)
    assert found == {".": 0o700} | {name: 0o600 for name in found if name != "."}
    assert kept is not None
    assert caplog.messages == [f"data_dir {data_dir} was open to other users (mode 0755); made private (0700)"]


@pytest.mark.parametrize(
    ("mode", "owner", "reason"),
    [
        pytest.param(
            0o777, "nobody", "other users may write to it (mode 0777) and it belongs to uid", id="others-write"
        ),
        pytest.param(0o1777, "root", "is a directory shared by every user (mode 1777, like /tmp)", id="shared"),
    ],
)
def test_serve_refuses_a_data_dir_it_cannot_make_private(tmp_path: Path, mode: int, owner: str, reason: str) -> None:
    if os.geteuid() != 0:
        missing("giving the data directory to another user needs root")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    user = pwd.getpwnam(owner)
    os.chown(data_dir, user.pw_uid, user.pw_gid)
    data_dir.chmod(mode)

    result = subprocess.run(
        [sys.executable, "-m", "calabi_exporter", "serve", "--listen", f"127.0.0.1:{free_port()}"],
        env={**environment_without_calabi(), "CALABI_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert result.stderr.startswith(f"calabi-exporter: config error: data_dir: {data_dir}"), result.stderr
    assert reason in result.stderr and result.stderr.count("\n") == 1
    assert sorted(data_dir.iterdir()) == []
