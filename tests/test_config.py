"""Configuration: file, environment and flags; bad config stops start-up with exit 2 and one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from calabi_exporter.collector import Thresholds
from calabi_exporter.config import OPTIONS, Config, ConfigError, ConnectionSettings, env_name, load_config
from calabi_exporter.readmodel import BadParameter, parse_duration

from .conftest import environment_without_calabi, free_port, wait_until


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "calabi.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_hold_without_a_file() -> None:
    assert load_config(None, env={}) == Config()


def test_a_file_sets_keys_and_connection_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "listen: 127.0.0.1:9999\nworkers: 4\nfreshness_threshold_seconds: 12h\n"
        "connections:\n  Salesforce → Snowflake:\n    failure_threshold: 3\n",
    )

    config = load_config(path, env={})

    assert config.listen == "127.0.0.1:9999"
    assert config.workers == 4
    assert config.freshness_threshold_seconds == 43200
    assert config.connections == {"Salesforce → Snowflake": ConnectionSettings(failure_threshold=3)}


def test_the_environment_beats_the_file_and_flags_beat_both(tmp_path: Path) -> None:
    path = write(tmp_path, "workers: 4\nthreads: 2\ndata_dir: /from/file\n")

    config = load_config(
        path,
        env={
            "CALABI_WORKERS": "6",
            "CALABI_DATA_DIR": "/from/env",
            "CALABI_INGEST_TOKENS": "a" * 16 + ",b" * 1 + "b" * 15,
        },
        flags={"data_dir": "/from/flag", "threads": None},
    )

    assert (config.workers, config.threads, config.data_dir) == (6, 2, "/from/flag")
    assert config.ingest_tokens == ("a" * 16, "b" * 16)


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        pytest.param("wokers: 2\n", {}, "wokers", id="unknown key"),
        pytest.param("workers: two\n", {}, "workers", id="not an integer"),
        pytest.param("workers: 0\n", {}, "workers", id="below minimum"),
        pytest.param("listen: 9188\n", {}, "listen", id="listen without host"),
        pytest.param("log_level: loud\n", {}, "log_level", id="unknown choice"),
        pytest.param("freshness_threshold_seconds: soon\n", {}, "freshness_threshold_seconds", id="bad duration"),
        pytest.param(
            f"freshness_threshold_seconds: {'9' * 400}\n", {}, "freshness_threshold_seconds", id="integer past a float"
        ),
        pytest.param("", {"CALABI_STUCK_FLOOR_SECONDS": "inf"}, "stuck_floor_seconds", id="infinite duration"),
        pytest.param("", {"CALABI_STUCK_FLOOR_SECONDS": "40000d"}, "stuck_floor_seconds", id="a century"),
        pytest.param("ingest_tokens: [short]\n", {}, "ingest_tokens", id="token too short"),
        pytest.param(
            "connections:\n  A:\n    failure_threshold: -1\n", {}, "connections.A.failure_threshold", id="bad override"
        ),
        pytest.param("connections:\n  A:\n    colour: red\n", {}, "connections.A.colour", id="unknown override"),
        pytest.param("workers: [1\n", {}, "config", id="not YAML"),
        pytest.param("- a\n- b\n", {}, "config", id="not a mapping"),
        pytest.param("", {"CALABI_WORKERS": "many"}, "workers", id="bad environment value"),
        pytest.param("", {"CALABI_WROKERS": "2"}, "CALABI_WROKERS", id="unknown environment variable"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text), env=env)

    assert raised.value.key == key


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


def test_every_option_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")

    for option in OPTIONS:
        assert f"`{option.key}`" in readme, option.key
        assert f"`{env_name(option.key)}`" in readme, option.key


def test_log_shipping_settings_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "otlp_logs_endpoint: http://loki:3100/otlp/v1/logs\n"
        "otlp_headers: {X-Scope-OrgID: tenant-a}\n"
        "debug_logs: false\n"
        "connections:\n"
        "  'Stripe → Postgres': {debug_logs: true}\n",
        encoding="utf-8",
    )

    config = load_config(path, env={"CALABI_OTLP_BATCH_SIZE": "500", "CALABI_LOG_MAX_AGE_SECONDS": "6d"})

    assert config.otlp_logs_endpoint == "http://loki:3100/otlp/v1/logs"
    assert config.otlp_headers == (("X-Scope-OrgID", "tenant-a"),)
    assert config.otlp_batch_size == 500
    assert config.log_max_age_seconds == 6 * 86400
    assert config.ships_debug("Stripe → Postgres") is True
    assert config.ships_debug("Salesforce → Snowflake") is False


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"CALABI_OTLP_LOGS_ENDPOINT": "loki:3100"}, "otlp_logs_endpoint"),
        ({"CALABI_OTLP_HEADERS": "X-Scope-OrgID"}, "otlp_headers"),
        ({"CALABI_DEBUG_LOGS": "sometimes"}, "debug_logs"),
        ({"CALABI_OTLP_BATCH_SIZE": "0"}, "otlp_batch_size"),
    ],
)
def test_a_bad_log_shipping_setting_names_its_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(None, env=env)

    assert raised.value.key == key


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


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        pytest.param(90, 90.0, id="a number"),
        pytest.param("90", 90.0, id="a number as text"),
        pytest.param("2.5", 2.5, id="a fraction of seconds"),
        pytest.param("30m", 1800.0, id="minutes"),
        pytest.param("2w", 1_209_600.0, id="weeks, as the read API takes them"),
        pytest.param("1.5h", None, id="a fractional duration, which the read API refuses too"),
        pytest.param("0d", None, id="zero"),
    ],
)
def test_durations_in_the_configuration_use_the_read_apis_grammar(raw: object, seconds: float | None) -> None:
    env = {"CALABI_FRESHNESS_THRESHOLD_SECONDS": str(raw)}
    if seconds is None:
        with pytest.raises(ConfigError) as raised:
            load_config(env=env)
        assert raised.value.key == "freshness_threshold_seconds"
        with pytest.raises(BadParameter):
            parse_duration("window", str(raw))
    else:
        assert load_config(env=env).freshness_threshold_seconds == seconds


def test_the_defaults_are_the_options_defaults_wherever_they_are_read() -> None:
    config = Config()

    assert config == load_config(env={})
    assert Thresholds.from_config(config).for_connection("any") == {
        "failure_threshold": 2,
        "freshness_threshold_seconds": 259200.0,
        "stuck_floor_seconds": 3600.0,
        "pending_threshold_seconds": 1800.0,
    }
