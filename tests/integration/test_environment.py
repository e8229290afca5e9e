"""Every command takes every documented ``CALABI_*`` variable and Kubernetes' service links; a typo stops it."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from calabi_exporter.config import OPTIONS, ConfigError, load_config
from calabi_exporter.environment import CONFIG_COMMANDS, VARIABLES

from tests.support.exporter_process import ExporterProcess
from tests.support.paths import ROOT
from tests.support.processes import environment_without_calabi

#: What the kubelet injects into every pod of a namespace holding the Services ``calabi-exporter`` (port
#: ``http``, 9188) and ``calabi-postgres`` (5432, unnamed), as ``makeLinkVariables`` and
#: ``getServiceEnvVarMap`` in kubernetes/pkg/kubelet/envvars/envvars.go and kubelet_pods.go write them.
SERVICE_LINKS = {
    "CALABI_EXPORTER_SERVICE_HOST": "10.96.45.12",
    "CALABI_EXPORTER_SERVICE_PORT": "9188",
    "CALABI_EXPORTER_SERVICE_PORT_HTTP": "9188",
    "CALABI_EXPORTER_PORT": "tcp://10.96.45.12:9188",
    "CALABI_EXPORTER_PORT_9188_TCP": "tcp://10.96.45.12:9188",
    "CALABI_EXPORTER_PORT_9188_TCP_PROTO": "tcp",
    "CALABI_EXPORTER_PORT_9188_TCP_PORT": "9188",
    "CALABI_EXPORTER_PORT_9188_TCP_ADDR": "10.96.45.12",
    "CALABI_POSTGRES_SERVICE_HOST": "fd00:10:96::7",
    "CALABI_POSTGRES_SERVICE_PORT": "5432",
    "CALABI_POSTGRES_PORT": "tcp://[fd00:10:96::7]:5432",
    "CALABI_POSTGRES_PORT_5432_TCP": "tcp://[fd00:10:96::7]:5432",
    "CALABI_POSTGRES_PORT_5432_TCP_PROTO": "tcp",
    "CALABI_POSTGRES_PORT_5432_TCP_PORT": "5432",
    "CALABI_POSTGRES_PORT_5432_TCP_ADDR": "fd00:10:96::7",
}
DOCUMENTED = {
    "CALABI_MCP_TOKEN": "mcp-token-0123456789abcdef",
    "CALABI_SIMULATOR_TOKEN": "simulator-token-0123456789",
}


def run(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "calabi_exporter", *args],
        env={**environment_without_calabi(), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_service_links_and_the_other_commands_variables_set_nothing() -> None:
    assert load_config(env={**SERVICE_LINKS, **DOCUMENTED, "CALABI_WORKERS": "3"}) == load_config(
        env={"CALABI_WORKERS": "3"}
    )


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("check-config",), id="check-config"),
        pytest.param(("healthcheck",), id="healthcheck"),
        pytest.param(("export", "--since", "1d"), id="export"),
        pytest.param(("demo", "--duration", "0"), id="demo"),
        pytest.param(("mcp",), id="mcp"),
    ],
)
def test_every_command_that_reads_the_configuration_accepts_a_pods_environment(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    # A configuration error exits 2 at once; every other outcome (the health check's "not ready", export's
    # missing bucket, mcp's missing store) says what the command did with an environment it accepted.
    env = {**SERVICE_LINKS, **DOCUMENTED, "CALABI_DATA_DIR": str(tmp_path / "data")}
    if args[0] == "demo":  # it would serve: stopped by a bad value, named once the names have passed
        env["CALABI_WORKERS"] = "many"
        result = run(*args, env=env, cwd=tmp_path)
        assert result.stderr.strip() == "calabi-exporter: config error: workers: must be an integer (got 'many')"
        return

    result = run(*args, env=env, cwd=tmp_path)

    assert "unknown setting" not in result.stderr
    assert "SERVICE" not in result.stderr and "_PORT" not in result.stderr
    expected = {
        "check-config": (0, ""),
        "healthcheck": (1, "calabi-exporter: not ready: http://127.0.0.1:9188/readyz: [Errno 111] Connection refused"),
        "export": (2, "calabi-exporter: config error: s3_export.bucket: is not set; export needs a bucket"),
        "mcp": (
            2,
            f"calabi-exporter: config error: data_dir: no store in {tmp_path / 'data'}; "
            "give the exporter's data_dir, or --url",
        ),
    }
    assert (result.returncode, result.stderr.strip()) == expected[args[0]]


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        pytest.param("CALABI_WROKERS", "; did you mean CALABI_WORKERS?", id="a transposition"),
        pytest.param("CALABI_INGEST_TOKEN", "; did you mean CALABI_INGEST_TOKENS?", id="the singular"),
        pytest.param("CALABI_MCP_TOKENS", "; did you mean CALABI_MCP_TOKEN?", id="a command's variable"),
        pytest.param("CALABI_RETENTION_DAYS", "; did you mean CALABI_RETENTION__DAYS?", id="one underscore"),
        pytest.param("CALABI_FOO", " (see calabi-exporter serve --help)", id="nothing close"),
        pytest.param(
            "CALABI_EXPORTER_PORT", " (see calabi-exporter serve --help)", id="a service link's name, not its value"
        ),
    ],
)
def test_an_unknown_calabi_variable_exits_2_naming_it_and_the_closest_known_one(
    tmp_path: Path, name: str, hint: str
) -> None:
    result = run("check-config", env={name: "9188"}, cwd=tmp_path)

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"calabi-exporter: config error: {name}: unknown setting{hint}\n"
    with pytest.raises(ConfigError, match=re.escape(f"{name}: unknown setting")):
        load_config(env={name: "9188"})


def test_serve_becomes_ready_in_a_pods_environment(exporter_process: Callable[..., ExporterProcess]) -> None:
    exporter = exporter_process(env={**SERVICE_LINKS, **DOCUMENTED})

    assert requests.get(exporter.url + "/readyz", timeout=10).json() == {"status": "ready"}


def documented_names() -> dict[str, str]:
    """Every ``CALABI_*`` name the README, the docs, the deployment files and ``--help`` mention, with where."""
    found: dict[str, str] = {}
    files = [
        ROOT / "README.md",
        ROOT / "docker-compose.yml",
        ROOT / ".env",
        ROOT / "Dockerfile",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "deploy").rglob("*.yaml")),
        *sorted((ROOT / "alerting-rules").glob("*.md")),
    ]
    for path in files:
        for name in re.findall(r"\bCALABI_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")):
            found.setdefault(name, str(path.relative_to(ROOT)))
    for command in (*CONFIG_COMMANDS, "simulate"):
        text = subprocess.run(
            [sys.executable, "-m", "calabi_exporter", command, "--help"], capture_output=True, text=True, check=True
        ).stdout
        for name in re.findall(r"\bCALABI_[A-Z0-9_]*[A-Z0-9]\b", text):
            found.setdefault(name, f"{command} --help")
    return found


#: Names the README shows as what the commands refuse or leave alone, not as settings.
SHOWN_AS_NOT_SETTINGS = {"CALABI_WROKERS", "CALABI_EXPORTER_SERVICE_HOST", "CALABI_EXPORTER_PORT_9188_TCP"}


def test_every_variable_anything_documents_is_one_the_commands_know() -> None:
    known = {option.env for option in OPTIONS} | {variable.name for variable in VARIABLES}
    documented = documented_names()

    assert {name: where for name, where in documented.items() if name not in known | SHOWN_AS_NOT_SETTINGS} == {}
    assert load_config(env={"CALABI_EXPORTER_SERVICE_HOST": "10.96.0.1"}) == load_config(env={})
    with pytest.raises(ConfigError, match="CALABI_WROKERS: unknown setting; did you mean CALABI_WORKERS"):
        load_config(env={"CALABI_WROKERS": "2"})
    assert {variable.name for variable in VARIABLES} <= set(documented)


@pytest.mark.parametrize("command", [*CONFIG_COMMANDS, "simulate"])
def test_help_lists_each_setting_with_its_environment_variable_and_default(command: str) -> None:
    text = subprocess.run(
        [sys.executable, "-m", "calabi_exporter", command, "--help"], capture_output=True, text=True, check=True
    ).stdout

    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.startswith("  ") and line.split()}
    if command in CONFIG_COMMANDS:
        assert rows["listen"] == ["CALABI_LISTEN", "127.0.0.1:9188"]
        assert rows["retention.plan"] == ["CALABI_RETENTION__PLAN", "professional"]
        assert rows["freshness_threshold_seconds"] == ["CALABI_FRESHNESS_THRESHOLD_SECONDS", "259200", "(3d)"]
        assert rows["ingest_tokens"] == ["CALABI_INGEST_TOKENS", "(empty)"]
        assert {option.key for option in OPTIONS} <= set(rows)
        assert rows["CALABI_CONFIG"][:3] == ["The", "YAML", "configuration"]
    for variable in VARIABLES:
        assert (variable.name in rows) == (command in variable.commands), variable.name
