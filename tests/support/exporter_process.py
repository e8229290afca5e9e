"""``calabi-exporter serve`` as a real subprocess on a free loopback port."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import requests

from .processes import environment_without_calabi, free_port
from .samples import Samples, parse_samples
from .waiting import wait_until


@dataclass
class ExporterProcess:
    """``calabi-exporter serve`` as a real subprocess."""

    data_dir: Path
    workers: int = 1
    extra_env: dict[str, str] | None = None
    log_level: str = "warning"
    log_path: Path | None = None  # the process's output (access log on stdout, the rest on stderr)
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ExporterProcess:
        self.port = free_port()
        env = environment_without_calabi()
        # The data sets are dated 2026-04-06: keep them whatever today's date is.
        env["CALABI_RETENTION__DAYS"] = "36500"
        env.update(self.extra_env or {})
        self.log = None if self.log_path is None else self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "calabi_exporter",
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--data-dir",
                str(self.data_dir),
                "--workers",
                str(self.workers),
                "--log-level",
                self.log_level,
            ],
            env=env,
            stdout=self.log,
            stderr=self.log,
        )

        def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, "exporter exited"
            try:
                return requests.get(self.url + "/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_until(ready, timeout=30, what="the exporter to be ready")
        except AssertionError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()
            self.log = None

    def scrape(self) -> Samples:
        response = requests.get(self.url + "/metrics", timeout=10)
        response.raise_for_status()
        return parse_samples(response.text)
