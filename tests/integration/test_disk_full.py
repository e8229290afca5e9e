"""A full disk under the data directory: a clear 507, nothing stored lost, the real reason at restart."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.support.exporter_process import ExporterProcess
from tests.support.jobs import job
from tests.support.processes import environment_without_calabi, free_port
from tests.support.real_components import missing

SIZE = "8m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs of its own: a real file system that fills up (needs root to mount)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        missing(f"cannot mount a small tmpfs here (root is needed): {result.stderr.strip() or result.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_until_full(exporter: ExporterProcess) -> tuple[list[str], requests.Response]:
    """Post batches of bulky jobs until one is refused; the ids stored before, and the refusal."""
    stored: list[str] = []
    summary = "Stream Account: schema mismatch on column " + "x" * 3000
    for batch in range(200):  # bounded: 8 MiB is full long before
        ids = [f"job-{batch:03d}-{n:03d}" for n in range(100)]
        records = [job(i, "failed", finished_at="2026-04-06T08:00:00Z", error_summary=summary) for i in ids]
        response = requests.post(exporter.url + "/api/v1/jobs", json={"jobs": records}, timeout=30)
        if response.status_code != 200:
            return stored, response
        stored += ids
    raise AssertionError("the disk never filled")


def test_a_full_disk_answers_507_keeps_what_was_stored_and_says_so_at_restart(
    small_disk: Path, exporter_process: Callable[..., ExporterProcess]
) -> None:
    data_dir = small_disk / "data"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (3 * 1024 * 1024))  # freed later, to show recovery
    exporter = exporter_process(data_dir=data_dir)

    stored, refused = fill_until_full(exporter)

    assert refused.status_code == 507, refused.text
    assert refused.json() == {
        "error": "the store's disk is full; nothing was stored, retry once space is freed",
        "field": None,
    }
    assert len(stored) >= 100
    for job_id in (stored[0], stored[-1]):
        assert requests.get(f"{exporter.url}/api/v1/jobs/{job_id}", timeout=10).status_code == 200
    assert requests.get(exporter.url + "/healthz", timeout=10).status_code == 200
    ready = requests.get(exporter.url + "/readyz", timeout=10)
    assert (ready.status_code, ready.json()) == (503, {"status": "unavailable", "error": "the store's disk is full"})
    assert str(small_disk) not in ready.text
    exporter.stop()

    listen = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "calabi_exporter", "serve", "--listen", listen, "--data-dir", str(data_dir)]
    restart = subprocess.run(argv, capture_output=True, text=True, env=environment_without_calabi(), timeout=60)
    assert restart.returncode == 1
    assert restart.stderr.startswith("calabi-exporter: the store's disk is full: "), restart.stderr
    assert "config error" not in restart.stderr

    filler.unlink()
    again = exporter_process(data_dir=data_dir, log_path=small_disk.parent / "again.log")
    late = job("after-space-freed", "succeeded", finished_at="2026-04-06T09:00:00Z")
    assert requests.post(again.url + "/api/v1/jobs", json=late, timeout=10).status_code == 200
    assert requests.get(f"{again.url}/api/v1/jobs/{stored[-1]}", timeout=10).status_code == 200
