"""Configuration met by real commands: `serve` and `check-config` as processes, their exit status and one line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from calabi_exporter.config import (
    OPTIONS,
    Config,
    ConfigError,
    Option,
    load_config,
)

from tests.support.exporter_process import ExporterProcess
from tests.support.processes import environment_without_calabi, free_port
from tests.support.waiting import wait_until


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "calabi.yml"
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = environment_without_calabi()
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "calabi_exporter", *args], capture_output=True, text=True, env=clean, timeout=60, cwd=cwd
    )


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        pytest.param("workers: two\n", {}, "workers: must be an integer (got 'two')", id="bad value"),
        pytest.param("wokers: 2\n", {}, "wokers: unknown key", id="unknown key"),
        pytest.param("", {"CALABI_LISTEN": "nowhere"}, "listen: must be host:port", id="bad environment"),
        pytest.param(
            "",
            {"CALABI_LISTEN": "0.0.0.0:9188"},
            "ingest_tokens: required when listen (0.0.0.0:9188) is not a loopback address; "
            "or set allow_unauthenticated: true to serve it open",
            id="an open port without tokens",
        ),
        pytest.param(
            "",
            {"CALABI_LISTEN": "[::]:9188", "CALABI_ALLOW_UNAUTHENTICATED": "no"},
            "ingest_tokens: required when listen ([::]:9188) is not a loopback address",
            id="ipv6 any without tokens",
        ),
        pytest.param(
            "s3_export:\n  bucket: b\n  endpoint_url: 'http://'\n",
            {},
            "s3_export.endpoint_url: must be an http:// or https:// URL with a valid host (got 'http://')",
            id="url without a host",
        ),
        pytest.param(
            "s3_export:\n  bucket: b\n  endpoint_url: 'http://bad host:9000'\n",
            {},
            "s3_export.endpoint_url: must be an http:// or https:// URL with a valid host",
            id="url with a space in the host",
        ),
        pytest.param(
            "",
            {"CALABI_OTLP_LOGS_ENDPOINT": "http://loki:99999/otlp/v1/logs"},
            "otlp_logs_endpoint: must be an http:// or https:// URL with a valid host",
            id="url with a port out of range",
        ),
        pytest.param(
            "",
            {"CALABI_DATABASE_URL": "mysql://calabi:s3cret@db/calabi"},
            "database_url: must be a postgresql://user:password@host:5432/database URL (empty: SQLite in data_dir)",
            id="a database url of another engine",
        ),
        pytest.param(
            "",
            {"CALABI_DATABASE_URL": "postgresql://calabi:s3cret@db/calabi?no_such_option=1"},
            "database_url: is not a connection URL PostgreSQL's client can read",
            id="a database url with an unknown option",
        ),
        pytest.param(
            "webhooks:\n  - name: ops\n    url: 'https://'\n    secret: x\n",
            {},
            "webhooks[0].url: must be an http:// or https:// URL with a valid host",
            id="webhook url without a host",
        ),
        pytest.param(
            "sources:\n  airbyte:\n    client_id: airbyte-application\n",
            {},
            "sources.airbyte.client_secret: is required with sources.airbyte.client_id",
            id="an Airbyte client id without its secret",
        ),
        pytest.param(
            "",
            {"CALABI_SOURCES__FIVETRAN__API_SECRET": "s3cret-of-fivetran"},
            "sources.fivetran.api_key: is required with sources.fivetran.api_secret",
            id="a Fivetran API secret without its key",
        ),
        pytest.param(
            "",
            {"CALABI_SOURCES__AIRBYTE__POLL_INTERVAL_SECONDS": "0"},
            "sources.airbyte.poll_interval_seconds: must be a number of seconds > 0",
            id="an Airbyte poll interval of zero",
        ),
        pytest.param(
            "",
            {"CALABI_SOURCES__FIVETRAN__POLL_INTERVAL_SECONDS": "5"},
            "sources.fivetran.poll_interval_seconds: must be at least 10 seconds",
            id="a Fivetran poll interval that would hammer its API",
        ),
        pytest.param(
            "sources:\n  fivetran: {api_key: key, api_secret: s3cret-of-fivetran, api_url: ''}\n",
            {},
            "sources.fivetran.api_url: is required with sources.fivetran.api_key",
            id="a Fivetran poller without its API",
        ),
        pytest.param(
            "sources:\n  airbyte: {client_id: app, client_secret: x, api_url: 'https://u:s3cret@airbyte.example.com/v1'}\n",
            {},
            "sources.airbyte.api_url: must not hold credentials: give them as sources.airbyte.client_id",
            id="an Airbyte API URL holding credentials",
        ),
    ],
)
def test_serve_with_bad_config_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    result = run_cli("serve", "--config", str(write(tmp_path, text)), "--data-dir", str(tmp_path / "d"), env=env)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"calabi-exporter: config error: {expected}")
    assert result.stdout == ""
    assert "s3cret" not in result.stderr


def test_serve_with_an_unusable_data_dir_exits_2_naming_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    result = run_cli("serve", "--data-dir", str(blocker / "sub"))

    assert result.returncode == 2
    assert result.stderr.startswith("calabi-exporter: config error: data_dir: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_config_masks_webhook_secrets(tmp_path: Path) -> None:
    secret = "whsec-0123456789abcdef"
    path = write(
        tmp_path,
        f"webhooks:\n  - {{name: ops, url: 'https://hooks.example.com/c', secret: {secret}, statuses: [failed]}}\n",
    )

    result = run_cli("check-config", "--config", str(path), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    webhook = json.loads(result.stdout)["webhooks"][0]
    assert webhook == {
        "name": "ops",
        "url": "https://hooks.example.com/c",
        "secret": "***",
        "statuses": ["failed"],
        "connections": [],
        "timeout_seconds": 10.0,
    }
    assert secret not in result.stdout


def test_the_default_listen_is_loopback(tmp_path: Path) -> None:
    assert Config().listen.startswith("127.0.0.1:")
    result = run_cli("check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["listen"] == "127.0.0.1:9188"


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"CALABI_ALLOW_UNAUTHENTICATED": "true"}, id="open by choice"),
        pytest.param({"CALABI_INGEST_TOKENS": "s3cret-token-0123456789"}, id="with a token"),
    ],
)
def test_serve_on_every_interface_starts_with_a_token_or_an_explicit_choice(
    tmp_path: Path, env: dict[str, str]
) -> None:
    port = free_port()
    clean = environment_without_calabi()
    clean.update(env)
    argv = [sys.executable, "-m", "calabi_exporter", "serve", "--listen", f"0.0.0.0:{port}"]
    process = subprocess.Popen([*argv, "--data-dir", str(tmp_path / "d"), "--log-level", "warning"], env=clean)
    try:

        def ready() -> bool:
            assert process.poll() is None, "serve exited"
            try:
                return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, timeout=30, what="serve on 0.0.0.0 to be ready")
    finally:
        process.terminate()
        process.wait(timeout=30)


# Nine anchors of nine aliases each, every one a new value of the same key: under 500 bytes worth
# 9**10 strings expanded. The last `workers` wins, so its error would quote the whole expansion.
ALIAS_BOMB = (
    "workers: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    "workers: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "workers: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "workers: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "workers: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "workers: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    "workers: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
    "workers: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
    "workers: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]\n"
    "workers: [*i, *i, *i, *i, *i, *i, *i, *i, *i]\n"
)


def test_an_alias_bomb_is_refused_in_one_short_line(tmp_path: Path) -> None:
    path = write(tmp_path, ALIAS_BOMB)

    result = run_cli("check-config", "--offline", "--config", str(path), cwd=tmp_path)

    assert len(ALIAS_BOMB) < 1000
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"calabi-exporter: config error: config: {path}: YAML aliases repeat more than 10000 values; "
        "write the values out\n"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "workers: &w [*w]\n",
            "config: {path}: YAML aliases repeat more than 10000 values; write the values out",
            id="itself",
        ),
        pytest.param(
            "workers: " + "[" * 100_000 + "\n", "config: {path} is not valid YAML: nested too deeply", id="deep"
        ),
        pytest.param(
            "workers: " + "1" * 5000 + "\n", "config: {path} is not valid YAML: a number too large to read", id="digits"
        ),
        pytest.param(
            f"workers: '{'x' * 100_000}'\n",
            "workers: must be an integer (got '" + "x" * 78 + "…)",
            id="a long value, quoted cut short",
        ),
        pytest.param(
            f"workers: [{', '.join(['lol'] * 5000)}]\n",
            "workers: must be an integer (got ['lol', 'lol', 'lol', 'lol', ...])",
            id="a long list, quoted cut short",
        ),
        pytest.param(
            f"{'k' * 1000}: 1\n",
            f"{'k' * 79}…: unknown key",
            id="a long unknown key, cut short",
        ),
        pytest.param(
            "otlp_logs_endpoint: 'http://ops:hunter2-secret@bad host/otlp/v1/logs'\n",
            "otlp_logs_endpoint: must be an http:// or https:// URL with a valid host "
            "(got 'http://ops:[REDACTED]@bad host/otlp/v1/logs')",
            id="a bad URL, quoted without its password",
        ),
    ],
)
def test_every_config_error_is_one_bounded_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)

    result = run_cli("check-config", "--offline", "--config", str(path), cwd=tmp_path)

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"calabi-exporter: config error: {expected.format(path=path)}\n"
    assert len(result.stderr) <= len("calabi-exporter: config error: ") + 1000


NUMERIC = [o for o in OPTIONS if isinstance(o.default, int | float) and not isinstance(o.default, bool)]


def maximum(option: Option) -> float:
    """The largest value ``option`` takes, as its refusal of a larger one says."""
    with pytest.raises(ConfigError) as raised:
        load_config(None, env={option.env: "9" * 400})
    found = re.search(r"must be at most (\d+(?:\.\d+)?)", str(raised.value))
    assert found is not None, str(raised.value)
    return float(found.group(1))


@pytest.mark.parametrize("option", NUMERIC, ids=[o.key for o in NUMERIC])
def test_every_numeric_option_refuses_a_huge_value_at_start_up_naming_its_key(option: Option) -> None:
    result = run_cli("check-config", "--offline", env={option.env: str(10**400)})

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(f"calabi-exporter: config error: {option.key}: must be at most ")
    assert len(result.stderr.splitlines()) == 1
    assert maximum(option) <= (10**9 if option.key.endswith("_seconds") else 2**31 - 1)


def test_retention_days_is_at_most_a_century() -> None:
    result = run_cli("check-config", "--offline", env={"CALABI_RETENTION__DAYS": str(10**400)})

    assert result.stderr == (
        f"calabi-exporter: config error: retention.days: must be at most 36500 (got '{str(10**400)[:78]}…)\n"
    )
    assert load_config(None, env={"CALABI_RETENTION__DAYS": "36500"}).retention_days == 36500


# Sized for the machine rather than for the data: their maxima would start a thousand processes.
RESOURCES = {"workers", "threads", "database_pool_size", "s3_export.batch_seconds"}


def test_serve_at_every_numeric_maximum_ingests_scrapes_reads_and_purges(
    tmp_path: Path, exporter_process: Callable[..., ExporterProcess]
) -> None:
    env = {o.env: f"{top:.0f}" if (top := maximum(o)) >= 1 else str(top) for o in NUMERIC if o.key not in RESOURCES}
    env["CALABI_OTLP_LOGS_ENDPOINT"] = f"http://127.0.0.1:{free_port()}/otlp/v1/logs"  # down: shipping retries
    log = tmp_path / "serve.log"
    exporter = exporter_process(env=env, log_level="info", log_path=log)
    url = exporter.url
    job = {"job_id": "m1", "connection_name": "Stripe → Postgres", "status": "failed", "error_summary": "boom"}

    answers = [
        requests.post(f"{url}/api/v1/jobs", json=job, timeout=10).status_code,
        requests.post(f"{url}/api/v1/jobs/m1/logs", json=[{"level": "ERROR", "message": "x"}], timeout=10).status_code,
        requests.get(f"{url}/api/v1/jobs", timeout=10).status_code,
        requests.get(f"{url}/api/v1/connections", timeout=10).status_code,
        requests.get(f"{url}/api/v1/jobs/m1", timeout=10).status_code,
    ]
    samples = exporter.scrape()
    wait_until(lambda: "log export to" in log.read_text(), timeout=30, what="the first log export to fail")
    exporter.stop()

    assert answers == [200, 200, 200, 200, 200]
    assert samples.value("calabi_sync_failure_threshold", connection="Stripe → Postgres") == 1_000_000
    text = log.read_text()
    assert "Traceback" not in text and " ERROR " not in text, text
