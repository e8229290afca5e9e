"""``check-config`` is the preflight of ``serve``: the same refusals, every secret masked, a file it prints loads."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import yaml
from calabi_exporter.config import OPTIONS, load_config
from calabi_exporter.preflight import MASK, SecretFilter, document, secret_values

from tests.support.capture_servers import WebhookReceiver
from tests.support.exporter_process import ExporterProcess
from tests.support.postgres_server import PostgresServer
from tests.support.processes import environment_without_calabi, free_port
from tests.support.waiting import wait_until


def run(*args: str, env: dict[str, str] | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "calabi_exporter", *args],
        env={**environment_without_calabi(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def unreachable_database() -> str:
    return f"postgresql://calabi:s3cret-password@127.0.0.1:{free_port()}/calabi?connect_timeout=3"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param(
            {"CALABI_LISTEN": "0.0.0.0:9999"},
            "ingest_tokens: required when listen (0.0.0.0:9999) is not a loopback address; "
            "or set allow_unauthenticated: true to serve it open",
            id="an open port without tokens",
        ),
        pytest.param(
            {"CALABI_OTLP_LOGS_ENDPOINT": "http://loki:99999/otlp/v1/logs"},
            "otlp_logs_endpoint: must be an http:// or https:// URL with a valid host (got 'http://loki:99999/otlp/v1/logs')",
            id="a url that can never be reached",
        ),
        pytest.param(
            {"CALABI_DATA_DIR": "{tmp}/file/sub"},
            "data_dir: ",
            id="a data directory that cannot be made",
        ),
    ],
)
def test_check_config_refuses_what_serve_refuses_with_the_same_line_and_exit_code(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    (tmp_path / "file").write_text("not a directory")
    env = {k: v.format(tmp=tmp_path) for k, v in env.items()}

    checked = run("check-config", env=env, cwd=tmp_path)
    served = run("serve", env=env, cwd=tmp_path)

    assert (checked.returncode, checked.stdout) == (2, "")
    assert checked.stderr.startswith(f"calabi-exporter: config error: {expected}")
    assert len(checked.stderr.splitlines()) == 1
    assert "s3cret-password" not in checked.stderr
    assert (served.returncode, served.stderr) == (checked.returncode, checked.stderr)


def test_check_config_offline_leaves_the_store_alone(tmp_path: Path) -> None:
    result = run("check-config", "--offline", env={"CALABI_DATABASE_URL": unreachable_database()}, cwd=tmp_path)

    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout)["database_url"].startswith("postgresql://calabi:[REDACTED]@127.0.0.1:")


def test_check_config_reaches_a_real_postgresql_as_serve_would(tmp_path: Path, postgres: PostgresServer) -> None:
    result = run("check-config", env={"CALABI_DATABASE_URL": postgres.new_database()}, cwd=tmp_path)

    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize(
    ("endpoint", "warned"),
    [
        pytest.param("http://loki:3100", True, id="Loki without its OTLP path"),
        pytest.param("http://loki:3100/loki/api/v1/push", True, id="Loki's push API, not OTLP"),
        pytest.param("http://loki:3100/otlp/v1/logs", False, id="Loki's OTLP path"),
        pytest.param("http://otel-collector:4318/v1/logs", False, id="a collector's OTLP path"),
        pytest.param("https://gw.example.com/otlp/v1/logs/", False, id="with a trailing slash"),
    ],
)
def test_an_otlp_endpoint_without_the_logs_path_is_named_in_a_warning(
    tmp_path: Path, endpoint: str, warned: bool
) -> None:
    result = run("check-config", env={"CALABI_OTLP_LOGS_ENDPOINT": endpoint}, cwd=tmp_path)

    assert result.returncode == 0
    base = endpoint.rstrip("/")
    expected = (
        f"calabi-exporter: warning: otlp_logs_endpoint {base} does not end in /v1/logs, the path of OTLP/HTTP "
        f"logs: receivers answer 404 elsewhere (Loki: {base}/otlp/v1/logs; an OpenTelemetry Collector: "
        f"{base}/v1/logs)\n"
    )
    assert result.stderr == (expected if warned else "")


SECRETS = {
    "CALABI_INGEST_TOKENS": "ingest-secret-0123456789",
    "CALABI_READ_TOKENS": "read-secret-0123456789ab",
    "CALABI_METRICS_TOKENS": "metrics-secret-012345678",
    "CALABI_DATABASE_URL": "postgresql://calabi:database-secret-0123@db:5432/calabi",
    "CALABI_OTLP_HEADERS": "Authorization=Bearer header-secret-0123456789",
    "CALABI_OTLP_LOGS_ENDPOINT": "https://user:otlp-secret-0123@loki.example.com/otlp/v1/logs?api_key=key-secret-0123",
    "CALABI_S3_EXPORT__ENDPOINT_URL": "https://minio:s3-secret-0123@minio.example.com:9000",
    "CALABI_SOURCES__FIVETRAN__WEBHOOK_SECRET": "fivetran-secret-0123456789",
    "CALABI_SOURCES__AIRBYTE__API_URL": "https://airbyte.example.com/api/public/v1?api_key=airbyte-url-secret-0123",
    "CALABI_SOURCES__AIRBYTE__CLIENT_SECRET": "airbyte-secret-0123456789",
    "CALABI_SOURCES__AIRBYTE__CONFIG_API_URL": "https://airbyte.example.com/api?api_key=config-api-secret-0123",
    "CALABI_SOURCES__FIVETRAN__API_URL": "https://fivetran.example.com/?token=fivetran-url-secret-0123",
    "CALABI_SOURCES__FIVETRAN__API_KEY": "fivetran-key-secret-0123",
    "CALABI_SOURCES__FIVETRAN__API_SECRET": "fivetran-api-secret-0123",
}
#: Not secrets, but what the secrets above need beside them (a client secret goes with its client id).
PARTNERS = {"CALABI_SOURCES__AIRBYTE__CLIENT_ID": "airbyte-application"}


def test_every_option_marked_secret_is_masked_and_every_credential_is_marked() -> None:
    marked = {option.env for option in OPTIONS if option.secret}
    words = ("token", "header", "password", "url", "endpoint", "secret", "key")
    credentials = {o.env for o in OPTIONS if any(word in o.key for word in words)}

    assert marked == set(SECRETS)
    assert credentials - marked == set()


def test_check_config_masks_every_secret_whatever_its_source(tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text("webhook-file-secret-0123456789\n")
    path = tmp_path / "calabi.yml"
    path.write_text(
        "webhooks:\n"
        "  - name: inline\n    url: 'https://ops:url-secret-0123@hooks.example.com/a'\n"
        "    secret: webhook-inline-0123456789\n"
        "  - {name: from-file, url: 'https://hooks.example.com/b', secret_file: webhook.secret}\n"
        "  - name: query\n    url: 'https://hooks.example.com/c?token=query-secret-0123&sig=sig-secret-0123&v=2'\n"
        "    secret: webhook-query-0123456789\n"
        "metrics_tokens: [metrics-file-secret-0123]\n"
    )

    result = run("check-config", "--offline", "--config", str(path), env=SECRETS | PARTNERS, cwd=tmp_path)

    assert (result.returncode, result.stderr) == (0, "")
    shown = json.loads(result.stdout)
    assert "secret-0" not in result.stdout and "webhook-" not in result.stdout
    assert (shown["ingest_tokens"], shown["read_tokens"], shown["metrics_tokens"]) == ([MASK], [MASK], [MASK])
    assert shown["otlp_headers"] == {"Authorization": MASK}
    assert shown["database_url"] == "postgresql://calabi:[REDACTED]@db:5432/calabi"
    assert shown["otlp_logs_endpoint"] == ("https://user:[REDACTED]@loki.example.com/otlp/v1/logs?api_key=[REDACTED]")
    assert shown["s3_export"]["endpoint_url"] == "https://minio:[REDACTED]@minio.example.com:9000"
    assert shown["sources"] == {
        "airbyte": {
            "api_url": "https://airbyte.example.com/api/public/v1?api_key=[REDACTED]",
            "client_id": "airbyte-application",
            "client_secret": MASK,
            "config_api_url": "https://airbyte.example.com/api?api_key=[REDACTED]",
            "poll_interval_seconds": 60.0,
            "backfill_seconds": 86400.0,
        },
        "fivetran": {
            "api_url": "https://fivetran.example.com/?token=[REDACTED]",
            "api_key": MASK,
            "api_secret": MASK,
            "poll_interval_seconds": 300.0,
            "webhook_secret": MASK,
        },
    }
    assert [(w["name"], w["url"], w.get("secret"), w.get("secret_file")) for w in shown["webhooks"]] == [
        ("inline", "https://ops:[REDACTED]@hooks.example.com/a", MASK, None),
        ("from-file", "https://hooks.example.com/b", None, str(secret_file)),
        ("query", "https://hooks.example.com/c?token=[REDACTED]&sig=[REDACTED]&v=2", MASK, None),
    ]


def test_the_printed_configuration_is_a_file_check_config_loads_to_the_same_configuration(tmp_path: Path) -> None:
    given = tmp_path / "given.yml"
    given.write_text(
        "listen: 127.0.0.1:9300\nfailure_threshold: 3\nretention: {plan: enterprise}\n"
        "limits: {max_connections: 500}\ns3_export: {bucket: archive, prefix: jobs/}\n"
        "otlp_headers: {X-Scope-OrgID: team-a}\n"
        "connections:\n  Stripe → Postgres: {failure_threshold: 5}\n  Zendesk → Snowflake: {debug_logs: true}\n"
    )
    env = {"CALABI_WORKERS": "3", "CALABI_FRESHNESS_THRESHOLD_SECONDS": "12h"}
    printed = run("check-config", "--offline", "--config", str(given), env=env, cwd=tmp_path)
    saved = tmp_path / "saved.yml"
    saved.write_text(printed.stdout)

    again = run("check-config", "--offline", "--config", str(saved), cwd=tmp_path)

    assert (printed.returncode, again.returncode, again.stderr) == (0, 0, "")
    assert again.stdout == printed.stdout
    first = load_config(given, env=env)
    second = load_config(saved, env={})
    assert document(second) == document(first)
    assert (second.workers, second.retention_plan, second.limits_max_connections) == (3, "enterprise", 500)
    assert yaml.safe_load(saved.read_text())["otlp_headers"] == {"X-Scope-OrgID": MASK}  # a secret stays masked


def test_each_connection_shows_its_effective_values(tmp_path: Path) -> None:
    path = tmp_path / "calabi.yml"
    path.write_text(
        "failure_threshold: 4\nper_stream_metrics: false\n"
        "connections:\n  Stripe → Postgres:\n    failure_threshold: 2\n    freshness_threshold_seconds: 12h\n"
    )

    shown = json.loads(run("check-config", "--offline", "--config", str(path), cwd=tmp_path).stdout)

    assert shown["connections"] == {
        "Stripe → Postgres": {
            "failure_threshold": 2,
            "freshness_threshold_seconds": 43200.0,
            "stuck_floor_seconds": 3600.0,
            "pending_threshold_seconds": 1800.0,
            "expected_interval_seconds": 0.0,
            "slo_objective": 0.99,
            "debug_logs": False,
            "per_stream_metrics": False,
        }
    }


def test_a_reader_that_stops_early_ends_check_config_without_a_traceback(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "calabi_exporter", "check-config", "--offline"],
        env=environment_without_calabi(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.read(1)
    process.stdout.close()  # as `| head -c 1` does
    stderr = process.stderr.read().decode()
    process.stderr.close()
    code = process.wait(timeout=60)

    assert first == b"{"
    assert (code, stderr) in ((141, ""), (0, ""))  # 0 when the whole document was in the pipe already


def test_the_configurations_secrets_are_masked_in_every_log_line(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(env=SECRETS | PARTNERS)
    secrets = SecretFilter(secret_values(config))
    caplog.handler.addFilter(secrets)
    logger = logging.getLogger("calabi_exporter.test")

    logger.warning("sent %s to %s", "Bearer header-secret-0123456789", "postgresql://calabi:database-secret-0123@db")
    try:
        raise RuntimeError("token ingest-secret-0123456789 refused")
    except RuntimeError:
        logger.exception("failed")

    text = caplog.text
    assert "secret-0" not in text
    assert caplog.records[0].getMessage() == f"sent {MASK} to postgresql://calabi:[REDACTED]@db"
    assert f"token {MASK} refused" in text


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(
            "receiver says: unknown key key-secret-0123",
            f"receiver says: unknown key {MASK}",
            id="a configured query token quoted alone",
        ),
        pytest.param(
            "GET /otlp/v1/logs?api_key=key-secret-0123 failed",
            "GET /otlp/v1/logs?api_key=[REDACTED] failed",
            id="a configured query token, as a client quotes the path",
        ),
        pytest.param(
            "cache redis://:r3dis-secret-0@cache:6379 down",
            "cache redis://:[REDACTED]@cache:6379 down",
            id="a URL the configuration does not hold",
        ),
        pytest.param(
            "broker amqp://u:pa/ss-secret-0@mq closed",
            "broker amqp://u:[REDACTED]@mq closed",
            id="a password holding a slash",
        ),
        pytest.param(
            "POST https://hooks.example.com/in?sig=sig-secret-0123 failed",
            "POST https://hooks.example.com/in?sig=[REDACTED] failed",
            id="a signature in a query",
        ),
    ],
)
def test_the_log_filter_masks_credentials_in_any_url(
    caplog: pytest.LogCaptureFixture, message: str, expected: str
) -> None:
    caplog.handler.addFilter(SecretFilter(secret_values(load_config(env=SECRETS | PARTNERS))))

    logging.getLogger("calabi_exporter.test").warning("%s", message)

    assert caplog.records[0].getMessage() == expected
    assert "secret-0" not in caplog.text


RAW_AT_PASSWORD = "se@cret-HUNTER2"


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_a_database_password_holding_a_raw_at_sign_is_refused_before_anything_is_sent(
    tmp_path: Path, command: str
) -> None:
    url = f"postgresql://calabi:{RAW_AT_PASSWORD}@127.0.0.1:{free_port()}/calabi?connect_timeout=3"

    result = run(command, env={"CALABI_DATABASE_URL": url}, cwd=tmp_path)

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "calabi-exporter: config error: database_url: has an '@' in its user name or password: "
        "percent-encode it as %40 (and '/' as %2F)\n"
    )


def test_serve_keeps_every_credential_out_of_its_log(
    tmp_path: Path, exporter_process: Callable[..., ExporterProcess]
) -> None:
    down, moved = WebhookReceiver(), WebhookReceiver()
    down.start()
    down.stop()  # refuses connections: every try fails, quoting the URL's path and query
    moved.answers = [(308, {"Location": "https://hooks.example.com/final?token=location-secret-0123"})]
    moved.start()
    config = tmp_path / "calabi.yml"
    config.write_text(
        "webhooks:\n"
        f"  - {{name: down, url: '{down.url}?token=query-secret-0123&sig=sig-secret-0123', secret: {'w' * 16}}}\n"
        f"  - {{name: moved, url: 'http://ops:url-secret-0123@127.0.0.1:{moved.port}/in', secret: {'w' * 16}}}\n"
        f"otlp_logs_endpoint: 'http://user:otlp-secret-0123@127.0.0.1:{free_port()}/otlp/v1/logs?api_key=key-secret-0123'\n"
        "metrics_tokens: [metrics-secret-0123456]\n"
    )
    log = tmp_path / "serve.log"
    try:
        exporter = exporter_process(env={"CALABI_CONFIG": str(config)}, log_level="debug", log_path=log)
        job = {"job_id": "s1", "connection_name": "Stripe → Postgres", "status": "failed", "error_summary": "boom"}
        assert requests.post(f"{exporter.url}/api/v1/jobs", json=job, timeout=10).status_code == 200
        lines = [{"level": "ERROR", "message": "sync failed"}]
        assert requests.post(f"{exporter.url}/api/v1/jobs/s1/logs", json=lines, timeout=10).status_code == 200

        def dead_lettered() -> bool:
            letters = requests.get(f"{exporter.url}/api/v1/webhooks/dead-letters", timeout=10).json()["dead_letters"]
            return [d["endpoint"] for d in letters] == ["moved"]

        wait_until(dead_lettered, timeout=30, what="the redirect to be dead-lettered")
        wait_until(
            lambda: "webhook down: ConnectionError" in log.read_text() and "log export to" in log.read_text(),
            timeout=30,
            what="a failed webhook delivery and a failed log export in the log",
        )
        letters = requests.get(f"{exporter.url}/api/v1/webhooks/dead-letters", timeout=10).text
        exporter.stop()
    finally:
        moved.stop()

    text = log.read_text()
    assert "/calabi-events?token=[REDACTED]&sig=[REDACTED]" in text
    assert "https://hooks.example.com/final?token=[REDACTED]" in letters
    assert "secret-0" not in text and "secret-0" not in letters
