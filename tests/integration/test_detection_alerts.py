"""Backdated histories posted to a real exporter fire exactly the detection alerts in a real Prometheus.

The exporter learns each connection's schedule and volume from the history it is sent; Prometheus,
with the shipped rules, decides which connection is overdue, stale or dropped its volume.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests
from calabi_exporter.timeutil import format_rfc3339

from tests.support.exporter_process import ExporterProcess
from tests.support.paths import RULE_FILES
from tests.support.prometheus_server import Prometheus
from tests.support.waiting import wait_until

HOUR = 3600.0
DAY = 86_400.0
GROUP = "calabi-sync-alerts"  # the group of CalabiSyncOverdue, CalabiSyncStale and CalabiSyncVolumeDrop


def history(connection: str, every: float, records: list[int], *, newest: float) -> list[dict[str, Any]]:
    """One successful job per count, ``every`` seconds apart, the newest finishing ``newest`` seconds ago."""
    now = time.time()
    n = len(records)
    jobs = []
    for i, count in enumerate(records):
        finished = now - newest - (n - 1 - i) * every
        jobs.append(
            {
                "job_id": f"{connection}-{i}",
                "connection_name": connection,
                "status": "succeeded",
                "started_at": format_rfc3339(finished - 120),
                "finished_at": format_rfc3339(finished),
                "records_synced": count,
            }
        )
    return jobs


def test_only_the_quiet_the_long_gone_and_the_dropped_connections_fire(
    exporter_process: Callable[..., ExporterProcess], prometheus_for: Callable[..., Prometheus]
) -> None:
    exporter = exporter_process()
    steady = [1000, 1010, 990, 1005, 995, 1020, 980, 1000, 1015, 985, 1000]
    jobs = [
        *history("hourly-on-time", HOUR, steady, newest=10 * 60),
        *history("hourly-quiet", HOUR, steady, newest=3 * HOUR),  # two syncs missed: overdue
        *history("hourly-gone", HOUR, steady, newest=4 * DAY),  # overdue, and stale past 3 days
        *history("daily-late", DAY, [500] * 8, newest=DAY + 2 * HOUR),  # two hours late: not yet
        *history("too-short", HOUR, [10] * 3, newest=5 * HOUR),  # no schedule learned: the 3-day floor only
        *history("noisy", HOUR, [400, 2600, 900, 1700, 1200, 300, 2000, 800, 1500, 1000, 600], newest=600),
        *history("dropped", HOUR, [*steady[:-1], 10], newest=10 * 60),  # a hundredth of the usual
    ]
    answer = requests.post(exporter.url + "/api/v1/jobs", json={"jobs": jobs}, timeout=30)
    assert answer.status_code == 200, answer.text

    prometheus = prometheus_for(f"127.0.0.1:{exporter.port}", rule_files=list(RULE_FILES))
    expected = {
        ("CalabiSyncOverdue", "hourly-quiet"),
        ("CalabiSyncOverdue", "hourly-gone"),
        ("CalabiSyncStale", "hourly-gone"),
        ("CalabiSyncVolumeDrop", "dropped"),
    }
    wait_until(lambda: expected <= prometheus.firing(), timeout=60, what="the detection alerts firing")
    # Every series came with the first scrape and none of these rules waits (no `for`): once their
    # group has been evaluated again, what has not fired will not.
    seen = prometheus.evaluations()[GROUP]
    wait_until(lambda: prometheus.evaluations()[GROUP] != seen, timeout=30, what=f"{GROUP} evaluated again")

    assert prometheus.firing() == expected
