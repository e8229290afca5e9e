"""Configuration: file, environment and flags; bad config stops start-up with exit 2 and one line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import get_type_hints

import pytest
from calabi_exporter import config_reference
from calabi_exporter.collector import Thresholds
from calabi_exporter.config import (
    CONNECTION_KEYS,
    OPTIONS,
    Config,
    ConfigError,
    ConnectionSettings,
    env_name,
    load_config,
)
from calabi_exporter.purger import Purger
from calabi_exporter.readmodel import BadParameter, parse_age
from calabi_exporter.store import Store

from tests.support.clock import FakeClock
from tests.support.paths import ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "calabi.yml"
    path.write_text(text, encoding="utf-8")
    return path


def load_file(tmp_path: Path, text: str) -> Config:
    """The configuration of a file holding ``text``, with no environment."""
    return load_config(write(tmp_path, text), env={})


def test_defaults_hold_without_a_file() -> None:
    assert load_config(None, env={}) == Config()


def test_a_file_sets_keys_and_connection_overrides(tmp_path: Path) -> None:
    config = load_file(
        tmp_path,
        "listen: 127.0.0.1:9999\nworkers: 4\nfreshness_threshold_seconds: 12h\n"
        "connections:\n  Salesforce → Snowflake:\n    failure_threshold: 3\n",
    )

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
        pytest.param(
            "connections:\n  A:\n    expected_interval_seconds: 30s\n",
            {},
            "connections.A.expected_interval_seconds",
            id="a schedule under a minute",
        ),
        pytest.param("slo_objective: 1\n", {}, "slo_objective", id="an objective no job count can meet"),
        pytest.param("", {"CALABI_SLO_OBJECTIVE": "nan"}, "slo_objective", id="an objective that is no number"),
        pytest.param("slo_objective: true\n", {}, "slo_objective", id="an objective that is a flag"),
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


def test_the_configuration_reference_is_the_one_the_options_render() -> None:
    committed = (ROOT / config_reference.PAGE).read_text(encoding="utf-8")

    assert committed == config_reference.render(), (
        "docs/configuration.md drifted: run python -m calabi_exporter.config_reference -o docs/configuration.md"
    )
    for option in OPTIONS:
        assert f"| `{option.key}` | `{env_name(option.key)}` |" in committed, option.key


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
            parse_age("window", str(raw))
    else:
        assert load_config(env=env).freshness_threshold_seconds == seconds


def test_config_has_one_field_per_option_typed_as_its_parser_returns_with_its_default() -> None:
    by_field = {option.key.replace(".", "_"): option for option in OPTIONS}
    hints = get_type_hints(Config)

    assert [f.name for f in fields(Config)] == [*by_field, "connections", "webhooks"]
    assert {name: hints[name] for name in by_field} == {
        name: get_type_hints(option.parse)["return"] for name, option in by_field.items()
    }
    assert {f.name: f.default for f in fields(Config) if f.name in by_field} == {
        name: option.default for name, option in by_field.items()
    }


def test_a_connection_overrides_options_typed_as_their_parsers_return_or_none() -> None:
    by_key = {option.key: option for option in OPTIONS}
    hints = get_type_hints(ConnectionSettings)

    assert CONNECTION_KEYS == (
        "failure_threshold",
        "freshness_threshold_seconds",
        "stuck_floor_seconds",
        "pending_threshold_seconds",
        "expected_interval_seconds",
        "slo_objective",
        "debug_logs",
        "per_stream_metrics",
    )
    assert {key: hints[key] for key in CONNECTION_KEYS} == {
        key: get_type_hints(by_key[key].parse)["return"] | None for key in CONNECTION_KEYS
    }
    assert ConnectionSettings() == ConnectionSettings(**dict.fromkeys(CONNECTION_KEYS))


def test_the_defaults_are_the_options_defaults_wherever_they_are_read() -> None:
    config = Config()

    assert config == load_config(env={})
    assert Thresholds.from_config(config).for_connection("any") == {
        "failure_threshold": 2,
        "freshness_threshold_seconds": 259200.0,
        "stuck_floor_seconds": 3600.0,
        "pending_threshold_seconds": 1800.0,
        "expected_interval_seconds": 0.0,
        "slo_objective": 0.99,
    }


def test_a_schedule_is_declared_in_units_or_left_to_learning_with_zero(tmp_path: Path) -> None:
    config = load_file(
        tmp_path,
        "slo_objective: '0.995'\nconnections:\n  daily: {expected_interval_seconds: 1d, slo_objective: 0.9}\n"
        "  learned: {expected_interval_seconds: 0}\n",
    )

    assert config.slo_objective == 0.995
    assert config.connections == {
        "daily": ConnectionSettings(expected_interval_seconds=86400.0, slo_objective=0.9),
        "learned": ConnectionSettings(expected_interval_seconds=0.0),
    }


def test_anchors_and_aliases_for_repeated_settings_still_load(tmp_path: Path) -> None:
    config = load_file(
        tmp_path,
        "connections:\n  Stripe → Postgres: &strict {failure_threshold: 1, freshness_threshold_seconds: 1h}\n"
        "  HubSpot → BigQuery: *strict\n  Zendesk → Snowflake: {<<: *strict, debug_logs: true}\n",
    )

    strict = ConnectionSettings(failure_threshold=1, freshness_threshold_seconds=3600.0)
    assert config.connections == {
        "Stripe → Postgres": strict,
        "HubSpot → BigQuery": strict,
        "Zendesk → Snowflake": ConnectionSettings(
            failure_threshold=1, freshness_threshold_seconds=3600.0, debug_logs=True
        ),
    }


@pytest.mark.every_backend
def test_the_purge_runs_at_the_longest_retention(
    tmp_path: Path, make_store: Callable[..., Store], clock: FakeClock
) -> None:
    config = load_config(None, env={"CALABI_RETENTION__DAYS": "36500"})
    store = make_store(tmp_path / "data", clock=clock)

    assert Purger(store, config, clock=clock).purge_once() == 0
