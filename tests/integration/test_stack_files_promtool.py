"""The compose stack's Prometheus configuration as promtool checks it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.support.paths import ROOT, RULE_FILES
from tests.support.processes import require_binary
from tests.support.stack_files import bind_mounts, load


def test_the_compose_prometheus_config_passes_promtool_check_config(tmp_path: Path) -> None:
    """promtool checks the shipped prometheus.yml with its container paths mapped back to the repo."""
    services = load("docker-compose.yml")["services"]
    to_host = {container: host for host, container in bind_mounts(services["prometheus"]).items()}
    config = load("prometheus/prometheus.yml")
    config["rule_files"] = [str(ROOT / to_host[path]) for path in config["rule_files"]]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = subprocess.run(
        [require_binary("promtool"), "check", "config", str(checked)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr
    for path in RULE_FILES:
        assert f"Checking {path}" in result.stdout + result.stderr
