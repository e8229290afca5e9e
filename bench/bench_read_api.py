"""Read API benchmark: the same listings out of 1,000 and out of 1,000,000 stored jobs.

Fills two stores with finished jobs over 1,000 connections (one job every
2.592 s, so a million jobs cover 30 days; every tenth failed), then times
``GET /api/v1/jobs`` queries through the real Flask app (in-process WSGI, no
network) and prints a Markdown table. The target: the newest 100 failed jobs
of the last 24 hours take the same order of time out of a million as out of
a thousand, because an index serves them.

    .venv/bin/python -m bench.bench_read_api [--output docs/read-api-benchmark.md]
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from calabi_exporter.config import Config
from calabi_exporter.store import Store
from calabi_exporter.web import create_app

T0 = 1_775_462_400.0  # 2026-04-06T08:00:00Z, the clock of the queries
SPACING = 2.592
RUNS = 50
QUERIES = {
    "newest 100 failed jobs of the last 24 h": "/api/v1/jobs?status=failed&since=24h&limit=100",
    "newest 100 jobs of one connection": "/api/v1/jobs?connection=connection%200007&limit=100",
    "newest 100 jobs, no filter": "/api/v1/jobs?limit=100",
    "failed jobs of two connections": "/api/v1/jobs?connection=connection%200010&connection=connection%200020"
    "&status=failed&limit=100",
    "connections with a 7-day window (1,000 connections)": "/api/v1/connections?window=7d",
}


def fill(data_dir: Path, jobs: int) -> float:
    """Insert ``jobs`` finished jobs ending at T0 (the newest spaced as in the million-job store)."""
    store = Store.sqlite(data_dir, synchronous="normal")
    store.close()
    started = time.perf_counter()
    db = sqlite3.connect(data_dir / "calabi-exporter.sqlite3")
    db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?2 - 1)"
        " INSERT INTO jobs (job_id, connection_name, status, started_at, finished_at, duration_seconds,"
        " job_time, first_seen, updated_at)"
        " SELECT printf('job-%07d', i), printf('connection %04d', i % 1000),"
        " CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'succeeded' END,"
        " ?1 - (?2 - i) * ?3, ?1 - (?2 - i) * ?3 + 60, 60.0, ?1 - (?2 - i) * ?3, ?1, ?1 FROM n",
        (T0, jobs, SPACING),
    )
    db.execute(
        "INSERT INTO connections (connection, first_seen, records_synced, records_failed, bytes_synced,"
        " streams_succeeded, streams_failed, consecutive_failures, jobs_succeeded, jobs_failed, jobs_cancelled)"
        " SELECT DISTINCT connection_name, ?, 0, 0, 0, 0, 0, 0, 0, 0, 0 FROM jobs",
        (T0 - 40 * 86400,),
    )
    db.commit()
    db.close()
    return time.perf_counter() - started


def time_queries(data_dir: Path) -> dict[str, tuple[float, float, int]]:
    """Median and max milliseconds of each query, and how many items it returned."""
    app = create_app(Config(data_dir=str(data_dir)), store=Store.sqlite(data_dir), clock=lambda: T0)
    client = app.test_client()
    out: dict[str, tuple[float, float, int]] = {}
    for name, url in QUERIES.items():
        body = client.get(url).get_json()  # warm-up, and the answer's size
        items = len(body.get("jobs", body.get("connections", [])))
        times = []
        for _ in range(RUNS):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        out[name] = (statistics.median(times), max(times), items)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="also write the Markdown report here")
    args = parser.parse_args()
    results: dict[int, dict[str, tuple[float, float, int]]] = {}
    fills: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for jobs in (1_000, 1_000_000):
            data_dir = Path(scratch) / f"jobs-{jobs}"
            data_dir.mkdir()
            fills[jobs] = fill(data_dir, jobs)
            results[jobs] = time_queries(data_dir)
    lines = [
        "# Read API benchmark",
        "",
        "Written by `bench/bench_read_api.py`; run it again rather than editing.",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()};"
        f" SQLite {sqlite3.sqlite_version}; {platform.platform()}",
        f"- stores filled with plain SQL: 1,000 jobs in {fills[1_000]:.2f} s, 1,000,000 in {fills[1_000_000]:.1f} s",
        f"- each query {RUNS} times through the Flask app in-process (no network), after one warm-up",
        "",
        "| Query | 1,000 jobs: median / max | 1,000,000 jobs: median / max | Items |",
        "|---|---|---|---|",
    ]
    for name in QUERIES:
        small, large = results[1_000][name], results[1_000_000][name]
        lines.append(
            f"| {name} | {small[0]:.2f} / {small[1]:.2f} ms | {large[0]:.2f} / {large[1]:.2f} ms |"
            f" {small[2]} / {large[2]} |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        args.output.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
