"""Debian's Prometheus as the tests query it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any

import requests


@dataclass
class Prometheus:
    """Debian's Prometheus, scraping its targets every second."""

    process: subprocess.Popen[bytes]
    url: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = requests.get(self.url + "/api/v1/query", params={"query": promql}, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, promql: str) -> float | None:
        """The single value of ``promql``, or None when it returns nothing."""
        result = self.query(promql)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def firing(self) -> set[tuple[str, str]]:
        """The alerts firing now, as (alert name, connection)."""
        return {
            (series["metric"]["alertname"], series["metric"].get("connection", ""))
            for series in self.query('ALERTS{alertstate="firing"}')
        }

    def evaluations(self) -> dict[str, str]:
        """Each rule group's last evaluation time, as Prometheus reports it (RFC 3339)."""
        response = requests.get(self.url + "/api/v1/rules", timeout=10)
        groups: list[dict[str, Any]] = response.json()["data"]["groups"]
        return {group["name"]: group["lastEvaluation"] for group in groups}
