"""How fast the pollers bring a vendor's backlog in: a first poll over many jobs or connections.

Each poller reads a scripted API on loopback (the vendor's side as the poller tests
script it, without Prism in between) into a SQLite store on a temp dir with
``sqlite_synchronous: full``: Airbyte's poller a backlog of ``--jobs`` jobs (one
connection name lookup, then pages of 100 from the cursor), Fivetran's an account of
``--connections`` connections (each one success and one failure). Printed: the poll's
time, its requests, jobs stored per second, and the second poll (nothing new) for
comparison. What a real vendor adds is its own latency per request (multiply the
requests by it).

Run from the project root::

    .venv/bin/python -m bench.bench_pollers                       # 5,000 jobs, 2,000 connections
    .venv/bin/python -m bench.bench_pollers --jobs 20000 --connections 5000
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from calabi_exporter.airbyte_poller import AirbytePoller
from calabi_exporter.config import Config
from calabi_exporter.fivetran_poller import FivetranPoller
from calabi_exporter.pollers import SourcePoller
from calabi_exporter.sources.airbyte_api import with_seconds
from calabi_exporter.store import Store
from calabi_exporter.timeutil import format_rfc3339, parse_rfc3339

from tests.support.vendor_api import Answer, Asked, ScriptedApi


def airbyte_api(jobs: int, now: float) -> ScriptedApi:
    api = ScriptedApi().start()
    connection = str(uuid.uuid4())
    items = [
        {
            "jobId": n,
            "status": "failed" if n % 5 == 0 else "succeeded",
            "jobType": "sync",
            "startTime": format_rfc3339(now - 80000 + 10 * n - 300),
            "connectionId": connection,
            "lastUpdatedAt": format_rfc3339(now - 80000 + 10 * n),
            "duration": "PT5M",
            "bytesSynced": 1000 * n,
            "rowsSynced": 10 * n,
        }
        for n in range(1, jobs + 1)
    ]

    updated = [parse_rfc3339(with_seconds(i["lastUpdatedAt"])) for i in items]  # ascending, as the items

    def list_jobs(asked: Asked) -> Answer:
        first = bisect.bisect_left(updated, parse_rfc3339(asked.query["updatedAtStart"]))
        offset, limit = int(asked.query["offset"]), int(asked.query["limit"])
        page = items[first + offset : first + offset + limit]
        return Answer(200, {"data": page, "next": "", "previous": ""})

    api.routes[("POST", "/applications/token")] = lambda _: Answer(
        200, {"access_token": "t", "token_type": "Bearer", "expires_in": 180}
    )
    api.routes[("GET", "/jobs")] = list_jobs
    api.routes[("GET", f"/connections/{connection}")] = lambda _: Answer(200, {"name": "Stripe → Snowflake"})
    return api


def fivetran_api(connections: int, now: float) -> ScriptedApi:
    api = ScriptedApi().start()
    items = [
        {
            "id": f"conn_{n:05d}",
            "schema": f"sheets_{n:05d}",
            "service": "google_sheets",
            "paused": False,
            "status": {"setup_state": "connected", "sync_state": "scheduled", "update_state": "on_schedule"},
            "succeeded_at": format_rfc3339(now - 3600 + n % 3000),
            "failed_at": format_rfc3339(now - 7200 + n % 3000),
            "sync_frequency": 360,
        }
        for n in range(connections)
    ]

    def list_connections(asked: Asked) -> Answer:
        start, limit = int(asked.query.get("cursor", "0")), int(asked.query["limit"])
        data: dict[str, Any] = {"items": items[start : start + limit]}
        if start + limit < len(items):
            data["next_cursor"] = str(start + limit)
        return Answer(200, {"code": "Success", "data": data})

    api.routes[("GET", "/v1/connections")] = list_connections
    return api


def measure(poller: SourcePoller, store: Store, api: ScriptedApi) -> dict[str, float]:
    started = time.perf_counter()
    outcome = poller.poll_once()
    elapsed = time.perf_counter() - started
    assert outcome == "ok", outcome
    requests = len(api.asked)
    stored = store.metrics.snapshot().stored_jobs
    again = time.perf_counter()
    assert poller.poll_once() == "ok"
    second = time.perf_counter() - again
    return {"seconds": elapsed, "requests": requests, "jobs": stored, "second_poll": second}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000, help="Airbyte jobs in the backlog")
    parser.add_argument("--connections", type=int, default=2000, help="Fivetran connections in the account")
    args = parser.parse_args(argv)
    now = time.time()
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        airbyte = airbyte_api(args.jobs, now)
        config = Config(
            data_dir=str(Path(directory) / "airbyte"),
            sources_airbyte_api_url=airbyte.url,
            sources_airbyte_client_id="app",
            sources_airbyte_client_secret="secret",
        )
        store = Store.from_config(config)
        results["Airbyte"] = measure(AirbytePoller(store, config), store, airbyte)
        store.close()
        airbyte.stop()
        fivetran = fivetran_api(args.connections, now)
        config = dataclasses.replace(
            Config(data_dir=str(Path(directory) / "fivetran")),
            sources_fivetran_api_url=fivetran.url,
            sources_fivetran_api_key="key",
            sources_fivetran_api_secret="secret",
        )
        store = Store.from_config(config)
        results["Fivetran"] = measure(FivetranPoller(store, config), store, fivetran)
        store.close()
        fivetran.stop()
    print("| poller | backlog | first poll | requests | jobs stored | jobs/s | next poll (nothing new) |")
    print("|---|---|---|---|---|---|---|")
    for name, backlog in (("Airbyte", f"{args.jobs:,} jobs"), ("Fivetran", f"{args.connections:,} connections")):
        r = results[name]
        print(
            f"| {name} | {backlog} | {r['seconds']:.2f} s | {r['requests']:,.0f} | {r['jobs']:,.0f} "
            f"| {r['jobs'] / r['seconds']:,.0f} | {r['second_poll']:.2f} s |"
        )
    print(json.dumps(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
