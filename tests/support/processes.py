"""Processes of the tests and benchmarks: how to start one on loopback, and those below a pid.

The processes below a pid are read from ``/proc`` (Linux): a server's workers, and everything to
kill or measure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import IO

import pytest
import requests

from .waiting import wait_until


def environment_without_calabi() -> dict[str, str]:
    """This process's environment without any ``CALABI_*`` setting, for a subprocess under test."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CALABI_")}


def free_port() -> int:
    """A loopback port free now, for a server about to start."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from the state field on (the command name before it may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                parents[int(entry.name)] = int(fields[1])
    return parents


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (gunicorn's workers, for its master)."""
    return sorted(child for child, parent in _parents().items() if parent == pid)


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    below: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        below.setdefault(parent, []).append(child)
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += below.get(current, [])
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes still alive among ``pids``."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def require_binary(name: str) -> str:
    """Path of a Debian-packaged binary the suite needs; the test command installs them."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run the README's test command, which installs it")
    return path


def start_server(
    argv: list[str], *, ready_url: str, log_path: Path, what: str, timeout: float = 30
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start a server binary with its stderr in ``log_path`` and wait until ``ready_url`` answers 200."""
    log = log_path.open("wb")
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)

    def ready() -> bool:
        assert process.poll() is None, f"{what} exited: " + log_path.read_text()
        try:
            return requests.get(ready_url, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, timeout=timeout, what=f"{what} to be ready")
    return process, log


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
