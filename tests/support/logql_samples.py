"""The dashboards' LogQL queries and a job with every field a shipped summary carries, for the Loki tests."""

from __future__ import annotations

import json

from .paths import ROOT

#: A finished job with every field a shipped summary can carry.
SAMPLE_JOB = {
    "job_id": "j",
    "connection_name": "c",
    "connection_id": "c1",
    "status": "failed",
    "started_at": "2026-04-06T08:00:00Z",
    "finished_at": "2026-04-06T08:01:00Z",
    "records_synced": 1,
    "records_failed": 1,
    "bytes_synced": 1,
    "error_summary": "x",
    "job_url": "https://x",
    "streams": [{"name": "Account", "status": "failed"}],
}


def logql_queries() -> list[tuple[str, str]]:
    """(dashboard / panel, expression) of every Loki target on the dashboards."""
    out = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            if panel["type"] != "row" and panel["datasource"]["type"] == "loki":
                out += [(f"{board['uid']} / {panel['title']}", t["expr"]) for t in panel["targets"]]
    return out
