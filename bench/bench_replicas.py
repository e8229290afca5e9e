"""Ingest and scrape on PostgreSQL, with one and with two replicas, next to SQLite, in one run.

Each setting is a real ``calabi-exporter serve`` (2 workers × 128 threads, the
defaults) on free loopback ports:

1. SQLite: one replica on a fresh data directory (``sqlite_synchronous: full``).
2. PostgreSQL, one replica, on a fresh database.
3. PostgreSQL, two replicas on one fresh database; the load is split between them,
   half the requests to each, at the same time.

In each: (a) batches of 100 finished jobs, (b) one finished job per request,
sent by Debian's ``wrk`` replaying prepared requests exactly once (see
``bench_ingest_scrape.py``, whose load generator this reuses). Afterwards the
stored jobs must equal the jobs posted. Then the scrape of 1,000 connections ×
20 streams is timed on each backend, and on two PostgreSQL replicas the time from kill -9 of the replica
holding every background role until the other holds them all (worst of three; target 15 s).

PostgreSQL is Debian's server in a temporary directory on a free loopback
port, with its defaults (``fsync``, ``synchronous_commit`` on: as durable as
SQLite's ``full``). Run from the project root::

    .venv/bin/python -m bench.bench_replicas            # ~2 min on 2 cores
    .venv/bin/python -m bench.bench_replicas --quick    # ~1.5 min, smaller counts

Results go to ``docs/benchmarks-replicas.md`` (overwritten). The target: single-
record ingest with two PostgreSQL replicas at least 70 % of SQLite's in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import requests
from calabi_exporter.store import Store

from bench.bench_ingest_scrape import (
    EXPORTER_WORKERS,
    FULL,
    QUICK,
    REQUEST_TIMEOUT,
    WRK,
    LoadResult,
    LoadSpec,
    Service,
    Sizes,
    exporter_service,
    free_port,
    metric_value,
    run_load,
    running,
    seed_jobs,
    time_scrapes,
    wait_for_workers,
)
from tests.support.postgres_server import PostgresServer, postgres_bin

ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT: Final = ROOT / "docs" / "benchmarks-replicas.md"
TARGET_RATIO: Final = 0.70


@dataclass(frozen=True, slots=True)
class Combined:
    """Loads run at once against several replicas, added up: counts summed, the slowest time and p99."""

    records: int
    requests: int
    failed: int
    seconds: float
    p99_ms: float

    @classmethod
    def of(cls, parts: list[LoadResult]) -> Combined:
        return cls(
            records=sum(p.records for p in parts),
            requests=sum(p.requests for p in parts),
            failed=sum(p.failed for p in parts),
            seconds=max(p.seconds for p in parts),
            p99_ms=max(p.p99_ms for p in parts),
        )


def ingest_options(parser: argparse.ArgumentParser, output: Path, *, quick: str = "smaller counts") -> None:
    """The options of the benchmarks that load replicas with wrk: ``--quick``, the clients per load, ``--output``."""
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--output", type=Path, default=output)


def postgres_and_wrk(parser: argparse.ArgumentParser) -> Path:
    """The directory of PostgreSQL's binaries; the parser's error when it or wrk is missing."""
    if not Path(WRK).exists():
        parser.error(f"{WRK} not found: install Debian's wrk (apt-get install wrk)")
    bin_dir, why = postgres_bin()
    if bin_dir is None:
        parser.error(why)
    return bin_dir


def replicas(workdir: Path, name: str, count: int, database_url: str | None) -> list[Service]:
    services = []
    for index in range(count):
        service = exporter_service(workdir / f"{name}-{index}", workdir, "full")
        if database_url:
            service.env["CALABI_DATABASE_URL"] = database_url
        services.append(service)
    return services


def load(services: list[Service], spec: LoadSpec, workdir: Path) -> Combined:
    """``spec``'s requests split evenly between the replicas, sent to all of them at once."""
    share = spec.requests // len(services)
    specs = [replace(spec, base_url=s.base_url, requests=share, tag=f"{spec.tag}{i}") for i, s in enumerate(services)]
    with ThreadPoolExecutor(len(services)) as pool:
        parts = list(pool.map(lambda pair: run_load(pair[0], pair[1].pid, workdir), zip(specs, services, strict=True)))
    return Combined.of(parts)


def stored_jobs(services: list[Service]) -> int:
    """The stored jobs as the replica that shows the store's metrics says."""
    for service in services:
        body = requests.get(service.base_url + "/metrics", timeout=REQUEST_TIMEOUT).content
        value = metric_value(body, "calabi_exporter_stored_jobs")
        if value is not None:
            return int(value)
    return -1


def bench_setting(
    label: str, services: list[Service], sizes: Sizes, batch_clients: int, clients: int, workdir: Path
) -> tuple[Combined, Combined, bool]:
    print(f"\n== {label}", flush=True)
    for service in services:
        service.start()
    try:
        for service in services:
            wait_for_workers(service.pid, EXPORTER_WORKERS)
        if len(services) > 1:
            time.sleep(3)  # one replica takes the metrics role
        batch = load(services, sizes.batch_load("", max(batch_clients // len(services), 1)), workdir)
        single = load(services, sizes.single_load("", max(clients // len(services), 1)), workdir)
        posted = batch.records + single.records
        stored = stored_jobs(services)
        ok = stored == posted and not batch.failed and not single.failed
        print(
            f"   batches {batch.records / batch.seconds:,.0f} records/s; single {single.requests / single.seconds:,.0f}"
            f" requests/s; posted {posted:,}, stored {stored:,}",
            flush=True,
        )
        return batch, single, ok
    finally:
        for service in services:
            service.stop()


def scrape_store(label: str, service: Service, fill: Store, sizes: Sizes) -> str:
    fill.ingest.jobs(seed_jobs(sizes), endpoint="jobs")
    fill.close()
    with running(service):
        wait_for_workers(service.pid, EXPORTER_WORKERS)
        time.sleep(2)  # the metrics role, on PostgreSQL
        result = time_scrapes(service.base_url, label, sizes.scrapes)
    return (
        f"| Scrape, {sizes.scrape_connections:,} connections × {sizes.scrape_streams} streams | {label} |"
        f" median **{result.median_s * 1000:,.0f} ms**, max {result.max_s * 1000:,.0f} ms, cold"
        f" {result.cold_s * 1000:,.0f} ms; {result.samples:,} samples, {result.body_bytes / 1e6:.1f} MB | |"
    )


TAKEOVER_TARGET_SECONDS: Final = 15.0


def roles_held(service: Service) -> set[str]:
    """The background roles ``service`` says it holds (``calabi_exporter_role_held``)."""
    text = requests.get(service.base_url + "/metrics", timeout=REQUEST_TIMEOUT).text
    held = set()
    for line in text.splitlines():
        if line.startswith("calabi_exporter_role_held{") and line.endswith(" 1.0"):
            held.add(line.split('role="', 1)[1].split('"', 1)[0])
    return held


def takeover(workdir: Path, database_url: str, rounds: int = 3) -> str:
    """Seconds from kill -9 of the replica holding every role until the other holds them all; worst of ``rounds``."""
    worst = 0.0
    for attempt in range(rounds):
        first, second = replicas(workdir, f"takeover-{attempt}", 2, database_url)
        first.start()
        try:
            deadline = time.monotonic() + 60
            while "metrics" not in roles_held(first) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(3)  # the other roles' workers take theirs within their first heartbeat
            held = roles_held(first)
            with running(second):
                assert first.process is not None
                os.killpg(first.process.pid, signal.SIGKILL)  # the master and its workers, at once
                killed = time.perf_counter()
                while roles_held(second) < held:
                    if time.perf_counter() - killed > 120:
                        raise RuntimeError("the second replica never took every role")
                    time.sleep(0.05)
                worst = max(worst, time.perf_counter() - killed)
        finally:
            first.stop()
    return (
        f"| Role takeover after kill -9 of the holder | PostgreSQL, 2 replicas | worst of {rounds}: **{worst:.1f} s**"
        f" | ≤ {TAKEOVER_TARGET_SECONDS:.0f} s: {'met' if worst <= TAKEOVER_TARGET_SECONDS else '**MISSED**'} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ingest_options(parser, DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    bin_dir = postgres_and_wrk(parser)
    sizes = replace(
        QUICK if args.quick else FULL,
        batch_requests=200 if args.quick else 500,
        single_requests=4_000 if args.quick else 10_000,
        scrapes=10,
    )
    started, clock = datetime.now(UTC), time.perf_counter()
    rows: list[str] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="calabi-bench-replicas-") as tmp:
        workdir = Path(tmp)
        postgres = PostgresServer(bin_dir, free_port(), durable=True)
        postgres.start()
        try:
            settings = [
                ("SQLite, 1 replica", replicas(workdir, "sqlite", 1, None)),
                ("PostgreSQL, 1 replica", replicas(workdir, "pg1", 1, postgres.new_database())),
                ("PostgreSQL, 2 replicas", replicas(workdir, "pg2", 2, postgres.new_database())),
            ]
            results = {}
            for label, services in settings:
                batch, single, ok = bench_setting(label, services, sizes, args.batch_clients, args.clients, workdir)
                results[label] = single
                if not ok:
                    problems.append(f"{label}: stored jobs differ from posted, or requests failed")
                rows.append(
                    f"| Ingest, batches of {sizes.batch_size} | {label} | **{batch.records / batch.seconds:,.0f}"
                    f" records/s** (p99 {batch.p99_ms:,.0f} ms) | |"
                )
                rows.append(
                    f"| Ingest, one job per request | {label} | **{single.requests / single.seconds:,.0f}"
                    f" requests/s** (p99 {single.p99_ms:,.0f} ms) | |"
                )
            sqlite_rate = results["SQLite, 1 replica"].requests / results["SQLite, 1 replica"].seconds
            two = results["PostgreSQL, 2 replicas"]
            ratio = (two.requests / two.seconds) / sqlite_rate
            rows.append(
                f"| Single-record ingest, 2 PostgreSQL replicas ÷ SQLite | same run | **{ratio:.0%}** |"
                f" ≥ {TARGET_RATIO:.0%}: {'met' if ratio >= TARGET_RATIO else '**MISSED**'} |"
            )
            rows.append(takeover(workdir, postgres.new_database()))
            url = postgres.new_database()
            pg_scrape = replicas(workdir, "scrape-pg", 1, url)[0]
            rows.append(scrape_store("PostgreSQL", pg_scrape, Store.postgres(url), sizes))
            sqlite_scrape = replicas(workdir, "scrape-sqlite", 1, None)[0]
            fill = Store.sqlite(workdir / "scrape-sqlite-0", synchronous="normal")
            rows.append(scrape_store("SQLite", sqlite_scrape, fill, sizes))
        finally:
            postgres.stop()
    seconds = time.perf_counter() - clock
    text = "\n".join(
        [
            "# Benchmarks: replicas on PostgreSQL next to SQLite",
            "",
            f"Run {started:%Y-%m-%d %H:%M} UTC, {seconds / 60:.1f} min, by `.venv/bin/python -m bench.bench_replicas"
            f"{' --quick' if args.quick else ''}`; {platform.platform()}, {os.cpu_count()} cores, Python"
            f" {platform.python_version()}, PostgreSQL {bin_dir.parent.name} (Debian, durable defaults).",
            "",
            "| Benchmark | Setting | Result | Target |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Batches: {sizes.batch_requests:,} requests × {sizes.batch_size} finished jobs over"
            f" {sizes.batch_connections} connections; single: {sizes.single_requests:,} requests over"
            f" {sizes.single_connections:,} connections; {args.batch_clients} and {args.clients} wrk connections"
            " in all, split evenly between the replicas of a setting, which are loaded at the same time. Every"
            " replica is `serve` with 2 workers × 128 threads; client, servers and PostgreSQL share the cores.",
            *(["", "Problems: " + "; ".join(problems)] if problems else []),
            "",
        ]
    )
    args.output.write_text(text, encoding="utf-8")
    print("\n" + text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
