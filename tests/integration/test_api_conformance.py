"""The running exporter answers as its OpenAPI document says, whatever a client sends.

schemathesis generates requests from ``/api/v1/openapi.json`` (valid ones and
broken ones, in every phase) against a real ``calabi-exporter serve`` with
tokens set, and applies all of its checks: no 5xx, every status and body as
documented, bad input refused, good input accepted (or, where a rule the
schema cannot state is broken, refused with a 400: see the settings file),
a missing token refused. A fixed seed keeps the run the same on every machine;
``N=… SEED=…`` runs by hand explore further.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.support.exporter_process import ExporterProcess
from tests.support.paths import TESTS

pytestmark = pytest.mark.slow  # containers or minutes of real servers: not in the day-to-day subset

TOKEN = "conformance-token-0123456789"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
SETTINGS = TESTS / "schemathesis" / "schemathesis.toml"  # why a 400 may answer generated data
EXAMPLES_PER_OPERATION = 30
SEED = 20261130


def guarded_exporter(exporter_process: Callable[..., ExporterProcess]) -> ExporterProcess:
    return exporter_process(env={"CALABI_INGEST_TOKENS": TOKEN, "CALABI_METRICS_TOKENS": TOKEN})


def test_schemathesis_with_every_check_finds_nothing_over_every_operation(
    exporter_process: Callable[..., ExporterProcess], tmp_path: Path
) -> None:
    exporter = guarded_exporter(exporter_process)

    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(SETTINGS),
            "run",
            f"{exporter.url}/api/v1/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--seed",
            str(SEED),
            "--generation-database",
            "none",
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--no-color",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        check=False,
    )

    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-4000:]
    document = requests.get(f"{exporter.url}/api/v1/openapi.json", timeout=5).json()
    operations = sum(len(item) for item in document["paths"].values()) - 1  # all but the document's own
    assert re.search(rf"Operations:\s+{operations} selected / {operations} total", run.stdout)
    generated = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert generated is not None and generated.group(1) == generated.group(2)
    assert int(generated.group(1)) > 1000


def test_a_request_line_over_eight_kilobytes_gets_414_as_json_naming_the_url(
    exporter_process: Callable[..., ExporterProcess],
) -> None:
    exporter = guarded_exporter(exporter_process)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    too_long = requests.get(
        f"{exporter.url}/api/v1/jobs", params={"connection": "x" * 9000}, headers=headers, timeout=5
    )
    long = requests.get(f"{exporter.url}/api/v1/jobs", params={"connection": "x" * 6000}, headers=headers, timeout=5)

    assert (too_long.status_code, too_long.headers["Content-Type"]) == (414, "application/json")
    assert too_long.json() == {
        "error": "the request line (method, URL, version) is longer than 8190 bytes",
        "field": "url",
    }
    assert (long.status_code, long.json()["jobs"]) == (200, [])


def test_too_many_headers_get_431_as_json_naming_the_headers(
    exporter_process: Callable[..., ExporterProcess],
) -> None:
    exporter = guarded_exporter(exporter_process)
    headers = {f"X-Filler-{n}": "x" for n in range(120)}

    response = requests.get(f"{exporter.url}/healthz", headers=headers, timeout=5)

    assert (response.status_code, response.headers["Content-Type"]) == (431, "application/json")
    assert response.json() == {"error": "the request headers are too many or too large", "field": "headers"}
