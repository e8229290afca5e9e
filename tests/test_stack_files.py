"""The stack's own files agree with what the exporter ships (Loki cannot run here; its config is checked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def load(relative: str) -> Any:
    return yaml.safe_load((ROOT / relative).read_text(encoding="utf-8"))


def test_loki_indexes_the_connection_and_keeps_the_instance_id_out_of_the_index() -> None:
    otlp = load("loki/loki-config.yaml")["limits_config"]["otlp_config"]
    resource = otlp["resource_attributes"]
    index_labels = [a for c in resource["attributes_config"] if c["action"] == "index_label" for a in c["attributes"]]

    assert resource["ignore_defaults"] is True
    assert "connection" in index_labels
    assert "service.instance.id" not in index_labels
    assert otlp["log_attributes"] == [{"action": "drop", "attributes": ["connection"]}]


def test_loki_stores_structured_metadata_on_tsdb_v13_with_thirty_days_of_retention() -> None:
    config = load("loki/loki-config.yaml")

    assert config["limits_config"]["allow_structured_metadata"] is True
    assert [(c["store"], c["schema"]) for c in config["schema_config"]["configs"]] == [("tsdb", "v13")]
    assert config["limits_config"]["retention_period"] == "720h"
    assert config["compactor"]["retention_enabled"] is True
    assert config["limits_config"]["reject_old_samples_max_age"] == "168h"


def test_compose_ships_the_exporters_logs_to_the_loki_service_with_that_config() -> None:
    compose = load("docker-compose.yml")
    services = compose["services"]
    env = services["exporter"]["environment"]

    assert env["CALABI_OTLP_LOGS_ENDPOINT"] == "http://loki:3100/otlp/v1/logs"
    assert env["CALABI_SERVICE_INSTANCE_ID"]
    mounts = [m.split(":")[0] for m in services["loki"]["volumes"]]
    assert "./loki/loki-config.yaml" in mounts
    assert (ROOT / "loki" / "loki-config.yaml").is_file()
    assert services["loki"]["image"].startswith("grafana/loki:3.")


def test_compose_runs_prometheus_and_alertmanager_on_the_files_the_tests_check() -> None:
    services = load("docker-compose.yml")["services"]

    prometheus_mounts = dict(
        m.rsplit(":", 1)[0].split(":", 1) for m in services["prometheus"]["volumes"] if m.startswith("./")
    )
    assert prometheus_mounts["./alerting-rules/calabi-sync.rules.yml"] == "/etc/prometheus/rules/calabi-sync.rules.yml"
    prometheus = load("prometheus/prometheus.yml")
    assert prometheus["rule_files"] == ["/etc/prometheus/rules/calabi-sync.rules.yml"]
    assert [job["job_name"] for job in prometheus["scrape_configs"]] == ["calabi-exporter"]

    alertmanager_mounts = dict(
        m.rsplit(":", 1)[0].split(":", 1) for m in services["alertmanager"]["volumes"] if m.startswith("./")
    )
    assert alertmanager_mounts["./alerting-rules/alertmanager.yml"] == "/etc/alertmanager/alertmanager.yml"
    assert alertmanager_mounts["./alerting-rules/templates"] == "/etc/alertmanager/templates"
    assert alertmanager_mounts["./alerting-rules/secrets"] == "/etc/alertmanager/secrets"
    am_config = load("alerting-rules/alertmanager.yml")
    assert am_config["global"]["smtp_auth_password_file"].startswith("/etc/alertmanager/secrets/")
