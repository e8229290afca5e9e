"""The stack's own files agree with what the exporter ships (Loki cannot run here; its config is checked)."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from calabi_exporter.config import load_config

from tests.support.paths import DATA, ROOT, RULE_FILES
from tests.support.stack_files import bind_mounts, load


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
    assert config["limits_config"]["retention_period"] == "${RETENTION_DAYS:-30}d"  # from .env, see below
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
    rule_files = [f"/etc/prometheus/rules/{path.name}" for path in RULE_FILES]
    assert [prometheus_mounts[f"./{path.relative_to(ROOT)}"] for path in RULE_FILES] == rule_files
    prometheus = load("prometheus/prometheus.yml")
    assert prometheus["rule_files"] == rule_files
    assert [job["job_name"] for job in prometheus["scrape_configs"]] == ["calabi-exporter"]

    alertmanager_mounts = dict(
        m.rsplit(":", 1)[0].split(":", 1) for m in services["alertmanager"]["volumes"] if m.startswith("./")
    )
    assert alertmanager_mounts["./alerting-rules/alertmanager.yml"] == "/etc/alertmanager/alertmanager.yml"
    assert alertmanager_mounts["./alerting-rules/templates"] == "/etc/alertmanager/templates"
    assert alertmanager_mounts["./alerting-rules/secrets"] == "/etc/alertmanager/secrets"
    am_config = load("alerting-rules/alertmanager.yml")
    assert am_config["global"]["smtp_auth_password_file"].startswith("/etc/alertmanager/secrets/")


def test_every_file_compose_mounts_exists_in_the_repo() -> None:
    services = load("docker-compose.yml")["services"]
    mounts = [host for service in services.values() for host in bind_mounts(service)]

    assert mounts
    for host in mounts:
        assert (ROOT / host).exists(), host
    assert {"exporter", "simulator", "prometheus", "alertmanager", "loki", "grafana"} <= set(services)
    images = [s["image"] for s in services.values() if "image" in s and not s["image"].endswith(":local")]
    assert all(":" in image and not image.endswith(":latest") for image in images), images


def test_one_env_variable_sets_the_retention_of_the_exporter_prometheus_and_loki() -> None:
    services = load("docker-compose.yml")["services"]
    env = dict(
        line.split("=", 1)
        for line in (ROOT / ".env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )

    assert env["RETENTION_DAYS"] == "30"  # Professional
    assert services["exporter"]["environment"]["CALABI_RETENTION__DAYS"] == "${RETENTION_DAYS:-30}"
    assert "--storage.tsdb.retention.time=${RETENTION_DAYS:-30}d" in services["prometheus"]["command"]
    assert services["loki"]["environment"]["RETENTION_DAYS"] == "${RETENTION_DAYS:-30}"
    assert "-config.expand-env=true" in services["loki"]["command"]
    for days in ("30", "90"):  # what the exporter makes of the value compose passes
        config = load_config(env={"CALABI_RETENTION__DAYS": days})
        assert config.retention_seconds == int(days) * 86400


def test_grafana_is_provisioned_with_the_dashboards_datasources_and_no_anonymous_access() -> None:
    grafana = load("docker-compose.yml")["services"]["grafana"]
    mounts = bind_mounts(grafana)
    datasources = load("grafana/provisioning/datasources/calabi.yml")["datasources"]
    provider = load("grafana/provisioning/dashboards/calabi.yml")["providers"][0]

    assert mounts["./dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GRAFANA_ADMIN_PASSWORD" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    uids = {d["uid"] for d in datasources}
    assert uids == {"prometheus", "loki", "alertmanager"}
    for path in (ROOT / "dashboards").glob("*.json"):
        board = json.loads(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            if panel["type"] != "row":  # a row only groups the panels below it
                assert panel["datasource"]["uid"] in uids, (path.name, panel["title"])


def test_the_image_installs_the_package_the_tests_install() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")

    assert "COPY pyproject.toml" in dockerfile and "COPY exporter ./exporter" in dockerfile
    assert "pip install --no-compile --require-hashes -r requirements.txt" in dockerfile
    assert "pip install --no-compile --no-deps ." in dockerfile
    assert "USER 10001:10001" in dockerfile and "useradd --uid 10001 --gid 10001" in dockerfile
    assert (
        'HEALTHCHECK --interval=15s --timeout=5s --start-period=15s --retries=3 CMD ["calabi-exporter", "healthcheck"]'
        in dockerfile
    )
    assert load("docker-compose.yml")["services"]["exporter"]["build"] == "."


def test_every_service_with_a_readiness_endpoint_has_a_health_check_and_dependents_wait_for_it() -> None:
    """The simulator and the MCP tools run the exporter's image but serve no /readyz of theirs."""
    services = load("docker-compose.yml")["services"]
    image_services = {
        name for name, service in services.items() if service.get("image") == services["exporter"]["image"]
    }
    checks = {
        name: service["healthcheck"]["test"]
        for name, service in services.items()
        if "test" in service.get("healthcheck", {})
    }

    assert image_services == {"exporter", "simulator", "mcp"}
    assert checks == {
        "exporter": ["CMD", "calabi-exporter", "healthcheck"],
        "postgres": ["CMD", "pg_isready", "-U", "calabi", "-d", "calabi"],
        "loki": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3100/ready"],
        "prometheus": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9090/-/ready"],
        "alertmanager": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9093/-/ready"],
        "grafana": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:3000/api/health"],
    }
    assert services["simulator"]["healthcheck"] == {"disable": True}
    assert services["mcp"]["healthcheck"] == {"disable": True}
    waits = {
        (name, dependency): condition["condition"]
        for name, service in services.items()
        for dependency, condition in service.get("depends_on", {}).items()
    }
    assert waits == {
        ("exporter", "postgres"): "service_healthy",
        ("prometheus", "alertmanager"): "service_healthy",
        ("grafana", "prometheus"): "service_healthy",
        ("grafana", "loki"): "service_healthy",
        ("mcp", "exporter"): "service_healthy",
        ("simulator", "exporter"): "service_healthy",
    }
    assert all(dependency in checks for _, dependency in waits)


def test_the_simulator_runs_only_in_the_demo_profile_and_the_stack_is_not_labelled_a_demo() -> None:
    services = load("docker-compose.yml")["services"]

    assert services["simulator"]["profiles"] == ["demo"]
    assert (
        services["exporter"]["environment"]["CALABI_DEPLOYMENT_ENVIRONMENT"] == "${DEPLOYMENT_ENVIRONMENT:-production}"
    )
    assert env_file()["DEPLOYMENT_ENVIRONMENT"] == "production"


def test_only_the_exporter_and_grafana_are_published_beyond_loopback() -> None:
    services = load("docker-compose.yml")["services"]
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}

    assert published == {
        "exporter": ["${EXPORTER_PORTS:-9188}:9188"],
        "grafana": ["${GRAFANA_PORT:-3000}:3000"],
        "loki": ["127.0.0.1:${LOKI_PORT:-3100}:3100"],
        "prometheus": ["127.0.0.1:${PROMETHEUS_PORT:-9090}:9090"],
        "alertmanager": ["127.0.0.1:${ALERTMANAGER_PORT:-9093}:9093"],
        "mcp": ["127.0.0.1:${MCP_PORT:-9189}:9189"],
    }


def test_the_compose_mcp_service_reads_the_exporters_api_with_a_valid_command() -> None:
    from calabi_exporter.cli import _parser

    services = load("docker-compose.yml")["services"]
    mcp = services["mcp"]
    args = _parser().parse_args(mcp["command"])

    assert (args.command, args.url, args.http, args.http_listen) == (
        "mcp",
        "http://exporter:9188",
        True,
        "0.0.0.0:9189",
    )
    assert services["exporter"]["environment"]["CALABI_LISTEN"].endswith(":9188")


def test_compose_is_closed_by_default_the_tokens_come_from_env_and_none_ships() -> None:
    services = load("docker-compose.yml")["services"]
    required = "${INGEST_TOKEN:?set INGEST_TOKEN in .env (openssl rand -hex 32)}"
    read = "${READ_TOKEN:?set READ_TOKEN in .env (openssl rand -hex 32)}"

    assert services["exporter"]["environment"]["CALABI_LISTEN"] == "0.0.0.0:9188"
    assert services["exporter"]["environment"]["CALABI_INGEST_TOKENS"] == required
    assert services["exporter"]["environment"]["CALABI_READ_TOKENS"] == read
    assert services["simulator"]["environment"]["CALABI_SIMULATOR_TOKEN"] == required
    # The MCP tools only read: the read token, both to answer agents and to call the exporter.
    assert services["mcp"]["environment"] == {"CALABI_READ_TOKENS": read, "CALABI_MCP_TOKEN": read}
    shipped = dict(
        line.split("=", 1) for line in (ROOT / ".env").read_text().splitlines() if line and not line.startswith("#")
    )
    assert shipped["INGEST_TOKEN"] == shipped["READ_TOKEN"] == ""  # compose refuses to start until they are set
    assert shipped["GRAFANA_ADMIN_PASSWORD"] == ""  # as above: no usable default password
    grafana = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert grafana == "${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD in .env}"
    assert all("ALLOW_UNAUTHENTICATED" not in str(s.get("environment", {})) for s in services.values())


def test_the_postgres_profile_runs_the_exporter_as_replicas_sharing_postgresql_and_prometheus_scrapes_each() -> None:
    compose = load("docker-compose.yml")
    services = compose["services"]
    exporter, postgres = services["exporter"], services["postgres"]
    scrape = load("prometheus/prometheus.yml")["scrape_configs"]
    # The settings .env ships commented out, for the user to switch on.
    shipped = dict(
        line.removeprefix("# ").split("=", 1)
        for line in (ROOT / ".env").read_text().splitlines()
        if re.match(r"# [A-Z_]+=", line)
    )
    config = load_config(None, env={"CALABI_DATABASE_URL": shipped["CALABI_DATABASE_URL"]})

    assert postgres["profiles"] == ["postgres"] and postgres["image"].startswith("postgres:")
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert exporter["environment"]["CALABI_DATABASE_URL"] == "${CALABI_DATABASE_URL:-}"
    assert exporter["deploy"]["replicas"] == "${EXPORTER_REPLICAS:-1}"
    assert exporter["depends_on"]["postgres"] == {"condition": "service_healthy", "required": False}
    assert (shipped["COMPOSE_PROFILES"], shipped["EXPORTER_REPLICAS"]) == ("postgres", "2")
    # One host port per replica, clear of the MCP tools' 9189; one replica keeps 9188.
    assert exporter["ports"] == ["${EXPORTER_PORTS:-9188}:9188"] and shipped["EXPORTER_PORTS"] == "9190-9191"
    assert config.database_url.startswith("postgresql://calabi:") and config.database_url.endswith(
        "@postgres:5432/calabi"
    )
    assert shipped["POSTGRES_PASSWORD"] in config.database_url
    assert [job["job_name"] for job in scrape] == ["calabi-exporter"]
    assert scrape[0]["dns_sd_configs"] == [
        {"names": ["exporter"], "type": "A", "port": 9188, "refresh_interval": "15s"}
    ]


CHOSEN = {"ALERTMANAGER_CONFIG": "alertmanager-null.yml", "READ_TOKEN": "r" * 32}


class ComposeRefusal(Exception):
    """What ``docker compose`` says when a ``${NAME:?message}`` variable is unset or empty."""


_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation: ``${NAME}``, ``${NAME:-default}``, ``${NAME:?message}``, ``$$``."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name)
        missing = current is None or (op is not None and op.startswith(":") and current == "")
        if op is not None and op.endswith("?") and missing:
            raise ComposeRefusal(f"required variable {name} is missing a value: {arg}")
        if op is not None and op.endswith("-") and missing:
            return arg
        return current or ""

    return _VARIABLE.sub(substitute, value)


def env_file(*, uncomment: bool = False) -> dict[str, str]:
    """The variables .env ships (with ``uncomment``, its commented-out ones switched on too)."""
    lines = (ROOT / ".env").read_text(encoding="utf-8").splitlines()
    if uncomment:
        lines = [line.removeprefix("# ") if re.match(r"# [A-Z_]+=", line) else line for line in lines]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def compose_schema_errors(env: dict[str, str]) -> list[str]:
    schema = json.loads((DATA / "compose-spec" / "compose-spec.json").read_text(encoding="utf-8"))
    compose = interpolate(load("docker-compose.yml"), env)
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(compose)]


@pytest.mark.parametrize("variable", ["INGEST_TOKEN", "READ_TOKEN", "GRAFANA_ADMIN_PASSWORD", "ALERTMANAGER_CONFIG"])
def test_compose_with_the_shipped_env_refuses_to_start_until_each_choice_is_made(variable: str) -> None:
    chosen = {"INGEST_TOKEN": "a" * 32, "GRAFANA_ADMIN_PASSWORD": "correct horse", **CHOSEN}
    del chosen[variable]

    with pytest.raises(ComposeRefusal, match=f"required variable {variable} is missing"):
        interpolate(load("docker-compose.yml"), {**env_file(), **chosen})


def test_compose_with_the_secrets_set_follows_the_compose_specification() -> None:
    env = {**env_file(), "INGEST_TOKEN": "a" * 32, "GRAFANA_ADMIN_PASSWORD": "correct horse", **CHOSEN}

    assert compose_schema_errors(env) == []
    exporter = interpolate(load("docker-compose.yml"), env)["services"]["exporter"]
    assert exporter["ports"] == ["9188:9188"] and exporter["deploy"]["replicas"] == "1"


def test_compose_with_two_replicas_on_postgresql_follows_the_compose_specification() -> None:
    env = {**env_file(uncomment=True), "INGEST_TOKEN": "a" * 32, "GRAFANA_ADMIN_PASSWORD": "correct horse", **CHOSEN}

    assert compose_schema_errors(env) == []
    exporter = interpolate(load("docker-compose.yml"), env)["services"]["exporter"]
    assert exporter["ports"] == ["9190-9191:9188"] and exporter["deploy"]["replicas"] == "2"
    assert exporter["environment"]["CALABI_DATABASE_URL"].startswith("postgresql://calabi:")


def test_the_schema_check_finds_a_mistake() -> None:
    env = {**env_file(), "INGEST_TOKEN": "a" * 32, "GRAFANA_ADMIN_PASSWORD": "correct horse", **CHOSEN}
    broken = load("docker-compose.yml")
    broken["services"]["mcp"]["healthcheck"] = {"disabled": True}
    schema = json.loads((DATA / "compose-spec" / "compose-spec.json").read_text(encoding="utf-8"))

    errors = list(jsonschema.Draft7Validator(schema).iter_errors(interpolate(broken, env)))

    assert errors and "disabled" in errors[0].message
