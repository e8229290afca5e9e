"""A real Loki 3.x on free loopback ports, for the tests that need to know what Loki accepts.

The binary is ``$LOKI_BIN``, else ``loki`` on PATH, else ``../shared/bin/loki`` beside the
project; without one the tests that need it skip and say so. Loki runs with the limits of its
defaults (the per-stream out-of-order window of ``max_chunk_age / 2``, 168 h
``reject_old_samples_max_age``) and either the project's ``otlp_config`` (read from
``loki/loki-config.yaml``, so the test checks the file users deploy) or Loki's default OTLP
mapping, as on Grafana Cloud or a shared company Loki.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import requests
import yaml
from calabi_exporter.logship import LogShipper
from calabi_exporter.store import Store
from calabi_exporter.timeutil import parse_rfc3339

from .paths import ROOT

PROJECT_CONFIG: Final = ROOT / "loki" / "loki-config.yaml"
#: ``project``: the otlp_config of loki/loki-config.yaml; ``default``: Loki's own OTLP mapping.
MAPPINGS: Final = ("project", "default")


def loki_binary() -> tuple[str | None, str]:
    """The Loki binary to run, or None and why there is none."""
    explicit = os.environ.get("LOKI_BIN")
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit, ""
        return None, f"LOKI_BIN={explicit} is not an executable file"
    on_path = shutil.which("loki")
    if on_path:
        return on_path, ""
    shared = ROOT.parent / "shared" / "bin" / "loki"
    if os.access(shared, os.X_OK):
        return str(shared), ""
    return None, f"no Loki binary: set LOKI_BIN, put loki on PATH or provide {shared}"


def project_otlp_config() -> dict[str, Any]:
    """``limits_config.otlp_config`` as the project ships it."""
    text = PROJECT_CONFIG.read_text(encoding="utf-8")
    config: dict[str, Any] = yaml.safe_load(text)["limits_config"]["otlp_config"]
    return config


def loki_config(directory: Path, http_port: int, grpc_port: int, *, mapping: str) -> dict[str, Any]:
    """A single-process Loki on loopback; ``mapping`` is ``project`` or ``default``."""
    limits: dict[str, Any] = {
        "allow_structured_metadata": True,
        "reject_old_samples": True,
        "reject_old_samples_max_age": "168h",
        # Far from the tests' volumes; what is tested is ordering and age, not rate.
        "ingestion_rate_mb": 64,
        "ingestion_burst_size_mb": 128,
        "per_stream_rate_limit": "64MB",
        "per_stream_rate_limit_burst": "128MB",
        "max_query_series": 100_000,
    }
    if mapping == "project":
        limits["otlp_config"] = project_otlp_config()
    return {
        "auth_enabled": False,
        "server": {
            "http_listen_address": "127.0.0.1",
            "http_listen_port": http_port,
            "grpc_listen_address": "127.0.0.1",
            "grpc_listen_port": grpc_port,
            "log_level": "warn",
        },
        "common": {
            "instance_addr": "127.0.0.1",
            "path_prefix": str(directory),
            "storage": {
                "filesystem": {
                    "chunks_directory": str(directory / "chunks"),
                    "rules_directory": str(directory / "rules"),
                }
            },
            "replication_factor": 1,
            "ring": {"kvstore": {"store": "inmemory"}},
        },
        "storage_config": {"object_store": {"filesystem": {"dir": str(directory / "objects")}}},
        "ruler_storage": {"backend": "local", "local": {"directory": str(directory / "ruler")}},
        "schema_config": {
            "configs": [
                {
                    "from": "2020-01-01",
                    "store": "tsdb",
                    "object_store": "filesystem",
                    "schema": "v13",
                    "index": {"prefix": "index_", "period": "24h"},
                }
            ]
        },
        "limits_config": limits,
        "analytics": {"reporting_enabled": False},
    }


@dataclass
class Loki:
    """A running Loki and the few API calls the tests make."""

    process: subprocess.Popen[bytes]
    url: str
    mapping: str
    log: IO[bytes]

    @property
    def otlp_url(self) -> str:
        return self.url + "/otlp/v1/logs"

    def query_range(self, logql: str, *, start: float, end: float, limit: int = 5000) -> list[dict[str, Any]]:
        """The streams ``logql`` returns between ``start`` and ``end`` (Unix seconds), oldest first."""
        params = {
            "query": logql,
            "start": str(int(start * 1e9)),
            "end": str(int(end * 1e9)),
            "limit": str(limit),
            "direction": "forward",
        }
        response = requests.get(self.url + "/loki/api/v1/query_range", params=params, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def entries(self, logql: str, *, start: float, end: float, limit: int = 5000) -> list[Entry]:
        """Every entry ``logql`` returns, with its stream's labels and metadata, in Loki time order."""
        out = []
        for stream in self.query_range(logql, start=start, end=end, limit=limit):
            labels = stream["stream"]
            for ns, line, *_ in stream["values"]:
                out.append(Entry(int(ns), line, labels))
        out.sort(key=lambda e: e.ns)
        return out

    def count(self, selector: str, *, at: float, days: int) -> int:
        """How many entries ``selector`` matches in the ``days`` before ``at``."""
        params = {"query": f"sum(count_over_time({selector} [{days}d]))", "time": str(int(at * 1e9))}
        response = requests.get(self.url + "/loki/api/v1/query", params=params, timeout=30)
        assert response.status_code == 200, response.text
        result = response.json()["data"]["result"]
        return int(result[0]["value"][1]) if result else 0

    def flush(self, selector: str, *, expected: int, at: float, days: int, timeout: float = 60) -> None:
        """Flush the ingester's chunks to the store and wait until ``selector`` counts ``expected`` entries.

        Loki answers queries for times older than a few hours from its store only, so
        backfilled history becomes queryable once its chunks are flushed (after
        ``chunk_idle_period`` on its own; at once here).
        """
        response = requests.post(self.url + "/flush", timeout=30)
        assert response.status_code == 204, response.text
        deadline = time.monotonic() + timeout
        found = -1
        while time.monotonic() < deadline:
            found = self.count(selector, at=at, days=days)
            if found >= expected:
                return
            time.sleep(0.5)
        raise AssertionError(f"{selector}: {found} entries after {timeout} s, expected {expected}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@dataclass(frozen=True)
class Entry:
    """One log entry as Loki returns it: its time, line, and labels (index, metadata, parsed)."""

    ns: int
    line: str
    labels: dict[str, str]


def true_time(entry: Entry) -> float:
    """When a line happened: its ``log_time`` when Loki took it at another time, else its own."""
    if "log_time" in entry.labels:
        return parse_rfc3339(entry.labels["log_time"])
    return entry.ns / 1e9


def ship_everything(shipper: LogShipper, store: Store, *, steps: int = 2000) -> None:
    """Ship until the outbox is empty, at the pace the shipper asks for (``steps`` rounds at most)."""
    for _ in range(steps):
        if not store.outbox.read(1):
            return
        time.sleep(min(shipper.ship_once(), 1.0))
    raise AssertionError("the outbox did not empty")


def start_loki(binary: str, directory: Path, *, mapping: str, ports: tuple[int, int], timeout: float = 60) -> Loki:
    """Start Loki in ``directory`` and wait until ``/ready`` answers (about 15 s)."""
    directory.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port = ports
    config_path = directory / "loki.yaml"
    config_path.write_text(yaml.safe_dump(loki_config(directory, http_port, grpc_port, mapping=mapping)))
    log = (directory / "loki.log").open("wb")
    process = subprocess.Popen(
        [binary, f"-config.file={config_path}", "-target=all"], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.close()
            raise AssertionError("Loki exited: " + (directory / "loki.log").read_text()[-4000:])
        try:
            if requests.get(url + "/ready", timeout=1).status_code == 200:
                return Loki(process, url, mapping, log)
        except requests.RequestException:
            pass
        time.sleep(0.25)
    process.kill()
    process.wait()
    log.close()
    raise AssertionError(f"Loki was not ready after {timeout} s: " + (directory / "loki.log").read_text()[-4000:])
