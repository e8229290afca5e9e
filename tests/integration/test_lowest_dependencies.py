"""The package installs with the lowest OpenTelemetry releases pyproject.toml allows, and ships records with them.

The lower bounds are read from pyproject.toml, so they are stated once: raising
a bound there moves this test along, and lowering one below what the code needs
fails it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

from tests.support.logql_samples import SAMPLE_JOB
from tests.support.paths import ROOT
from tests.support.real_components import missing

pytestmark = pytest.mark.slow  # a throwaway venv installed from the index: not in the day-to-day subset

INSTALL_TIMEOUT = 600
#: What pip says when it cannot reach the index at all.
OFFLINE = (
    "NewConnectionError",
    "ConnectTimeoutError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
)

SHIP = """
import json
import sys

from calabi_exporter.config import Config
from calabi_exporter.joblogs import LogLine
from calabi_exporter.logship import resource_for, to_log_record
from calabi_exporter.model import parse_job
from calabi_exporter.store import OutboxEntry
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest


config = Config(deployment_environment="prod", service_namespace="data", service_instance_id="host-1")
job = parse_job(json.loads(sys.argv[1]))
resource = resource_for(config, "c")
records = [
    to_log_record(OutboxEntry(id, job, line, 1.0), resource)
    for id, line in ((1, LogLine("INFO", "Syncing stream: Account", 1.0, "Account")), (2, None))
]
request = ExportLogsServiceRequest.FromString(encode_logs(records).SerializeToString())
(resource_logs,) = request.resource_logs
(scope_logs,) = resource_logs.scope_logs
print(
    json.dumps(
        {
            "resource": sorted(a.key for a in resource_logs.resource.attributes),
            "scope": scope_logs.scope.name,
            "records": [
                {
                    "body": r.body.string_value,
                    "severity": r.severity_text,
                    "time_unix_nano": r.time_unix_nano,
                    "attributes": sorted(a.key for a in r.attributes),
                }
                for r in scope_logs.log_records
            ],
        },
        sort_keys=True,
    )
)
"""

SHIPPED = {
    "resource": [
        "connection",
        "deployment.environment",
        "service.instance.id",
        "service.name",
        "service.namespace",
    ],
    "scope": "calabi_exporter",
    "records": [
        {
            "body": "Syncing stream: Account",
            "severity": "INFO",
            "time_unix_nano": 1_000_000_000,
            "attributes": ["connection", "connection_id", "event", "job_id", "stream"],
        },
        {
            "body": "Job j failed; records synced 1; records failed 1; streams succeeded 0 / 1; x",
            "severity": "ERROR",
            "time_unix_nano": 1_775_462_460_000_000_000,
            "attributes": [
                "bytes_synced",
                "connection",
                "connection_id",
                "duration_seconds",
                "error_summary",
                "event",
                "finished_at",
                "job_id",
                "job_url",
                "records_failed",
                "records_synced",
                "started_at",
                "status",
                "streams_failed",
                "streams_succeeded",
            ],
        },
    ],
}


def opentelemetry_lower_bounds() -> dict[str, str]:
    """Each ``opentelemetry-*`` requirement of the project and its ``>=`` bound."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    bounds: dict[str, str] = {}
    for requirement in project["dependencies"]:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert name, requirement
        if name.group().lower().startswith("opentelemetry-"):
            bound = re.search(r">=\s*([0-9][^,;\s]*)", requirement)
            assert bound, f"{requirement} has no lower bound"
            bounds[name.group().lower()] = bound.group(1)
    return bounds


def run(*command: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=timeout, check=False)


def test_the_package_installs_and_ships_a_record_with_the_lowest_allowed_opentelemetry(tmp_path: Path) -> None:
    bounds = opentelemetry_lower_bounds()
    assert {"opentelemetry-sdk", "opentelemetry-exporter-otlp"} <= bounds.keys()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in bounds.items()), encoding="utf-8")
    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"

    pip = ("-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", constraints, ROOT)
    installed = run(python, *pip, timeout=INSTALL_TIMEOUT)
    offline = [line for line in installed.stderr.splitlines() if any(sign in line for sign in OFFLINE)]
    if installed.returncode != 0 and offline:
        missing(f"pip cannot reach the package index: {offline[0].strip()}")
    assert installed.returncode == 0, installed.stdout + installed.stderr

    versions = run(
        python,
        "-c",
        "import importlib.metadata as m, json, sys; print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))",
        *bounds,
    )
    assert versions.returncode == 0, versions.stderr
    # pip takes 1.39 and 1.39.0 for the same release, and installs the latter.
    assert {name: Version(v) for name, v in json.loads(versions.stdout).items()} == {
        name: Version(v) for name, v in bounds.items()
    }

    shipped = run(python, "-c", SHIP, json.dumps(SAMPLE_JOB), timeout=60)
    assert shipped.returncode == 0, shipped.stderr
    assert json.loads(shipped.stdout) == SHIPPED
