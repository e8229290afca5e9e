"""Where the exporter's ingest time goes: a per-job cost breakdown and a cProfile, in-process.

Companion to ``bench_ingest_scrape.py``: that one measures rates through gunicorn;
this one removes HTTP and concurrency so the CPU cost of one request's path can be
read off directly. It posts the same job records (finished, 3 streams, 1 in 5
failed) through Flask's test client into a store on a temp dir, then:

1. splits the cost per job into validation (``parse_job``), the store's
   ``Store.ingest.jobs`` and an empty write transaction (``BEGIN IMMEDIATE``/``COMMIT``,
   i.e. the fsync with ``sqlite_synchronous: full``);
2. prints the top functions of a cProfile of the whole request path.

Only one thread writes here, so SQLite lock waits between gunicorn threads and
workers (the busy handler sleeps and retries) do not show; under load they add
to what is printed.

Run from the project root::

    .venv/bin/python -m bench.profile_ingest                  # batches of 100, sync=full
    .venv/bin/python -m bench.profile_ingest --batch 1 --synchronous normal
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from calabi_exporter.config import Config
from calabi_exporter.model import parse_job
from calabi_exporter.store import Store
from calabi_exporter.web import create_app

from bench.bench_ingest_scrape import job_record


def bodies(tag: str, requests: int, batch: int) -> list[bytes]:
    """Serialised request bodies: ``{"jobs": [...]}`` for batches, one record otherwise."""
    out: list[bytes] = []
    for r in range(requests):
        records = [job_record(r * batch + i, tag, 200) for i in range(batch)]
        out.append(json.dumps({"jobs": records} if batch > 1 else records[0]).encode())
    return out


def per_job_breakdown(tmp: Path, requests: int, batch: int, synchronous: str) -> None:
    """Microseconds per job of each layer, measured separately on fresh stores."""
    jobs_total = requests * batch
    records = [job_record(i, "parse", 200) for i in range(jobs_total)]
    started = time.perf_counter()
    parsed = [parse_job(record) for record in records]
    parse_us = (time.perf_counter() - started) / jobs_total * 1e6

    store = Store.sqlite(tmp / "store", synchronous=synchronous)
    started = time.perf_counter()
    for r in range(requests):
        store.ingest.jobs(parsed[r * batch : (r + 1) * batch], endpoint="jobs")
    store_us = (time.perf_counter() - started) / jobs_total * 1e6

    started = time.perf_counter()
    for _ in range(requests):
        store.ingest.jobs([], endpoint="jobs")  # an empty write transaction: BEGIN IMMEDIATE, counters, COMMIT
    empty_us = (time.perf_counter() - started) / requests * 1e6
    store.close()

    app = create_app(Config(data_dir=str(tmp / "app"), sqlite_synchronous=synchronous))
    client = app.test_client()
    payloads = bodies("http", requests, batch)
    started = time.perf_counter()
    for payload in payloads:
        response = client.post("/api/v1/jobs", data=payload, content_type="application/json")
        assert response.status_code == 200, response.get_data(as_text=True)
    request_us = (time.perf_counter() - started) / jobs_total * 1e6

    print(f"per job, batches of {batch}, sync={synchronous}, one thread, {jobs_total:,} jobs:")
    print(f"  whole request path (Flask test client) {request_us:8.0f} µs/job")
    print(f"  parse_job (validation)                 {parse_us:8.0f} µs/job")
    print(f"  Store.ingest.jobs                      {store_us:8.0f} µs/job")
    print(f"  of which empty write transaction       {empty_us / batch:8.0f} µs/job ({empty_us:.0f} µs/request)")
    print(f"  → one thread could ingest at most ~{1e6 / request_us:,.0f} jobs/s on this path\n")


def profile_requests(tmp: Path, requests: int, batch: int, synchronous: str, top: int) -> None:
    app = create_app(Config(data_dir=str(tmp / "profiled"), sqlite_synchronous=synchronous))
    client = app.test_client()
    payloads = bodies("prof", requests, batch)
    profiler = cProfile.Profile()
    profiler.enable()
    for payload in payloads:
        client.post("/api/v1/jobs", data=payload, content_type="application/json")
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batch", type=int, default=100, help="jobs per request (1: single-record requests)")
    parser.add_argument("--requests", type=int, default=0, help="requests to send (default: 10,000 jobs' worth)")
    parser.add_argument("--synchronous", choices=("full", "normal"), default="full")
    parser.add_argument("--top", type=int, default=25, help="functions to list")
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= 10_000:
        parser.error("--batch must be 1..10000")
    requests = args.requests or max(1, 10_000 // args.batch)
    with tempfile.TemporaryDirectory(prefix="calabi-profile-") as tmp:
        per_job_breakdown(Path(tmp), requests, args.batch, args.synchronous)
        profile_requests(Path(tmp), requests, args.batch, args.synchronous, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
