"""Log shipping benchmark: lines/s from the outbox to a local OTLP/HTTP receiver, and memory with a large outbox.

1. Throughput: a store on a temp dir holds ``--lines`` log lines of 100 jobs
   (appended in-process, 1,000 per call); ``LogShipper.ship_once`` runs until
   the outbox is empty, against a receiver in another process that parses each
   request with the protobuf runtime and counts the records. Reported: lines/s
   from first export to empty outbox, and the records the receiver counted
   (must equal the lines).
2. Real Loki (``--loki``, on by default when a Loki binary is found the way the tests find it:
   ``LOKI_BIN``, ``loki`` on PATH, ``../shared/bin/loki``): the same outbox shipped to a single-process
   Loki 3.x on loopback with the project's ``otlp_config`` (rate limits raised as in the tests), and the
   tests' 7-day backfill (6 connections, 240 jobs, about 28,000 lines, records first then logs)
   from the first request to the last line queryable (after Loki flushes its chunks); and one job
   of 1,000 lines of 5 KB (about 5 MB of OTLP, over Loki's 4 MiB message limit) from its upload to
   every line queryable, in requests of at most ``otlp_max_request_bytes``.
3. Ingestion during an outage: 10,000 lines posted in 100 requests while the shipper runs against
   a receiver that is down (backing off, one record per attempt), against the same with no shipper;
   best of five, interleaved. The shipper must not compete with ingestion (target: at most 1.2 times).
4. Memory: with the receiver down, ``--outbox`` lines (1,000,000 by default)
   are ingested while the shipper runs in its thread (backing off); the
   process's resident memory is sampled as the outbox grows, and the peak RSS
   is reported.

Run from the project root::

    .venv/bin/python -m bench.bench_log_shipping                 # about 3 minutes on 2 cores
    .venv/bin/python -m bench.bench_log_shipping --lines 50000 --outbox 200000   # quicker

Prints a Markdown table; ``--output`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from calabi_exporter.config import Config
from calabi_exporter.joblogs import LogLine
from calabi_exporter.logship import LogShipper
from calabi_exporter.model import parse_job
from calabi_exporter.store import Store
from calabi_exporter.web import background_workers, create_app

TARGET_LINES_PER_S = 20_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_receiver(port: int, counted: Synchronized[int]) -> None:
    """A minimal OTLP/HTTP logs receiver: parse, count, answer 200."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            request = ExportLogsServiceRequest()
            request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
            n = sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
            with counted.get_lock():
                counted.value += n
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def lines_for(job: int, start: int, count: int, base: float) -> list[LogLine]:
    return [
        LogLine(
            "INFO", f"Stream table_{i % 20:02d}: {i * 7 % 5000} records synced in {i % 60}.{i % 10}s", base + i, None
        )
        for i in range(start, start + count)
    ]


def fill(store: Store, lines: int, jobs: int = 100) -> None:
    base = time.time() - 3600
    for j in range(jobs):
        record = {"job_id": f"job-{j}", "connection_name": f"conn-{j % 10} → warehouse", "status": "running"}
        store.ingest.jobs([parse_job(record)], endpoint="jobs")
    per_job = lines // jobs
    for j in range(jobs):
        for start in range(0, per_job, 1000):
            store.ingest.logs(f"job-{j}", lines_for(j, start, min(1000, per_job - start), base))


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def ship_outbox(workdir: Path, name: str, endpoint: str, lines: int, batch: int) -> tuple[int, float, float]:
    """Fill an outbox with ``lines`` and ship it all: (lines shipped, seconds, shipper CPU cores)."""
    config = Config(
        data_dir=str(workdir / name),
        otlp_logs_endpoint=endpoint,
        otlp_batch_size=batch,
        service_instance_id="bench",
        service_name=f"calabi-bench-{name}",
    )
    store = Store.sqlite(config.data_path, synchronous="normal", outbox=True)
    print(f"filling the outbox with {lines:,} lines", flush=True)
    fill(store, lines)
    shipper = LogShipper(store, config)
    shipper.ship_once()  # the first export carries one record (the shipper starts cautious)
    started = time.perf_counter()
    cpu_started = time.process_time()
    while store.metrics.snapshot().shipping.waiting:
        shipper.ship_once()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    shipped = store.metrics.snapshot().shipping.exported
    store.close()
    return shipped, seconds, cpu / seconds


def throughput(workdir: Path, lines: int, batch: int) -> tuple[str, bool]:
    port = free_port()
    counted: Synchronized[int] = mp.Value("q", 0)  # type: ignore[assignment]
    receiver = mp.get_context("fork").Process(target=serve_receiver, args=(port, counted), daemon=True)
    receiver.start()
    time.sleep(0.5)
    shipped, seconds, cores = ship_outbox(workdir, "imitation", f"http://127.0.0.1:{port}/otlp/v1/logs", lines, batch)
    time.sleep(0.5)
    receiver.terminate()
    rate = (shipped - 1) / seconds
    row = (
        f"| Shipping to a local OTLP/HTTP receiver | batches of {batch:,} | **{rate:,.0f} lines/s** "
        f"({shipped:,} lines, receiver counted {counted.value:,}; shipper CPU {cores:.2f} cores) "
        f"| ≥ {TARGET_LINES_PER_S:,} lines/s | {'met' if rate >= TARGET_LINES_PER_S else '**MISSED**'} |"
    )
    return row, counted.value == shipped == lines


def real_loki(workdir: Path, binary: str, lines: int, batch: int) -> tuple[list[str], bool]:
    """Shipping rate to a real Loki, and the 7-day backfill until fully queryable."""
    from tests.support.job_history import big_job, history
    from tests.support.loki_server import start_loki
    from tests.support.processes import free_port as test_port

    loki = start_loki(binary, workdir / "loki", mapping="project", ports=(test_port(), test_port()))
    try:
        shipped, seconds, cores = ship_outbox(workdir, "loki", loki.otlp_url, lines, batch)
        rate = (shipped - 1) / seconds
        rows = [
            f"| Shipping to a real Loki 3.x on loopback | batches of {batch:,} | **{rate:,.0f} lines/s** "
            f"({shipped:,} lines; shipper CPU {cores:.2f} cores) | - | - |"
        ]
        now = time.time()
        jobs = history(now)
        backfill = to_loki(workdir, loki, "backfill", jobs, at=now + 3600, days=8, timeout=300)
        rows.append(
            f"| 7-day backfill to a real Loki | {len(jobs)} jobs, {backfill.expected:,} records, records first | "
            f"posted {backfill.posted:.1f} s, shipped {backfill.shipped:.1f} s, **all queryable after "
            f"{backfill.queryable:.1f} s** ({backfill.dead} dead-lettered) | - | - |"
        )
        big_row, big_dead = big_job_to_loki(workdir, loki, big_job(job_id="job-big", connection="Bench", now=now))
        rows.append(big_row)
        return rows, backfill.dead == 0 and big_dead == 0
    finally:
        loki.stop()


def big_job_to_loki(workdir: Path, loki: Any, job: Any) -> tuple[str, int]:
    """One job of 1,000 lines of 5 KB, from its upload to every line queryable: (row, dead letters)."""
    big = to_loki(workdir, loki, "big", [job], at=time.time() + 3600, days=1, timeout=120)
    row = (
        f"| One job of 1,000 lines of 5 KB to a real Loki | about 5 MB of OTLP, requests ≤ "
        f"{Config().otlp_max_request_bytes / 1048576:g} MiB | shipped in {big.steps} steps, {big.shipped:.1f} s after "
        f"the upload began, **all {big.expected:,} records queryable after {big.queryable:.1f} s** ({big.dead} "
        "dead-lettered) | - | - |"
    )
    return row, big.dead


@dataclass(frozen=True, slots=True)
class ToLoki:
    """Jobs posted and shipped to Loki: seconds from the first post until each stage ended, and the counts."""

    posted: float
    shipped: float
    queryable: float
    steps: int  # ship_once calls
    dead: int
    expected: int  # records in Loki: every line and each job's summary


def to_loki(workdir: Path, loki: Any, name: str, jobs: list[Any], *, at: float, days: int, timeout: float) -> ToLoki:
    """Post ``jobs`` (records first, then lines) to a fresh exporter, ship them all, wait until Loki has them all.

    The records go out as ``service_name="calabi-bench-<name>"``; Loki is asked
    over ``days`` up to ``at``, for at most ``timeout`` seconds.
    """
    from tests.support.job_history import post_records_then_logs

    config = Config(
        data_dir=str(workdir / name),
        otlp_logs_endpoint=loki.otlp_url,
        service_instance_id="bench",
        service_name=f"calabi-bench-{name}",
    )
    store = Store.sqlite(config.data_path, synchronous="normal", outbox=True)
    client = create_app(config, store=store).test_client()
    started = time.perf_counter()
    post_records_then_logs(client, "", jobs)
    posted = time.perf_counter() - started
    shipper = LogShipper(store, config)
    steps = 0
    while store.metrics.snapshot().shipping.waiting:
        shipper.ship_once()
        steps += 1
    shipped = time.perf_counter() - started
    dead = store.metrics.snapshot().shipping.dead_lettered
    store.close()
    expected = sum(len(job.lines) + 1 for job in jobs)
    loki.flush(f'{{service_name="{config.service_name}"}}', expected=expected, at=at, days=days, timeout=timeout)
    return ToLoki(posted, shipped, time.perf_counter() - started, steps, dead, expected)


def memory(workdir: Path, outbox: int) -> str:
    config = Config(
        data_dir=str(workdir / "memory"),
        otlp_logs_endpoint=f"http://127.0.0.1:{free_port()}/otlp/v1/logs",  # nobody listens: an outage
        otlp_timeout_seconds=1.0,
        sqlite_synchronous="normal",
    )
    app = create_app(config)
    client = app.test_client()
    workers = background_workers(app)
    assert workers is not None
    workers.start()
    for j in range(100):
        record = {"job_id": f"job-{j}", "connection_name": f"conn-{j % 10} → warehouse", "status": "running"}
        client.post("/api/v1/jobs", json=record)
    samples: list[tuple[int, float]] = [(0, rss_mib())]
    base = time.time() - 3600  # every line within the last hour: not in the future, not too old for Loki
    per_request = 1000
    for n in range(outbox // per_request):
        job = n % 100
        body = "".join(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(base + i % 3600))}Z INFO Stream table_{i % 20:02d}: "
            f"{i} records synced in 1.5s\n"
            for i in range(n * per_request, (n + 1) * per_request)
        )
        response = client.post(f"/api/v1/jobs/job-{job}/logs", data=body, content_type="text/plain")
        assert response.status_code == 200, response.get_data(as_text=True)
        done = (n + 1) * per_request
        if done % (outbox // 5) == 0:
            samples.append((done, rss_mib()))
            print(f"  {done:,} lines waiting, RSS {samples[-1][1]:.0f} MiB", flush=True)
    waiting = app.extensions["calabi_exporter"].store.metrics.snapshot().shipping.waiting
    workers.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    curve = ", ".join(f"{n:,}: {mib:.0f}" for n, mib in samples)
    return (
        f"| Memory while Loki is down | {waiting:,} lines waiting in the outbox | RSS MiB by lines waiting: {curve}; "
        f"**peak RSS {peak:.0f} MiB** | flat | {'met' if samples[-1][1] - samples[1][1] < 50 else '**MISSED**'} |"
    )


def ingest_seconds(data_dir: Path, endpoint: str, *, ship: bool) -> float:
    """Seconds to ingest 10,000 lines (100 requests of 100) into a fresh store with its outbox.

    ``ship``: the shipper runs in its thread meanwhile, against ``endpoint``.
    """
    config = Config(data_dir=str(data_dir), otlp_logs_endpoint=endpoint, otlp_timeout_seconds=1.0)
    app = create_app(config)
    client = app.test_client()
    workers = background_workers(app)
    assert workers is not None and workers.shipper is not None
    if ship:
        workers.shipper.start()
    start = time.time() - 3600
    bodies = [
        "".join(
            f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(start + r * 100 + i))}Z INFO request {r} line {i}\n"
            for i in range(100)
        )
        for r in range(100)
    ]
    client.post("/api/v1/jobs", json={"job_id": "job-1", "connection_name": "a → b", "status": "running"})
    began = time.perf_counter()
    for body in bodies:
        response = client.post("/api/v1/jobs/job-1/logs", data=body, content_type="text/plain")
        assert response.status_code == 200, response.get_data(as_text=True)
    seconds = time.perf_counter() - began
    if ship:
        workers.shipper.stop()
    app.extensions["calabi_exporter"].store.close()
    return seconds


def outage(workdir: Path, rounds: int = 5) -> str:
    """Ingestion while the receiver is down against ingestion with no shipper: best of ``rounds``, interleaved."""
    down = f"http://127.0.0.1:{free_port()}/otlp/v1/logs"  # nobody listens
    quiet, during = [], []
    for attempt in range(rounds):
        quiet.append(ingest_seconds(workdir / f"quiet-{attempt}", down, ship=False))
        during.append(ingest_seconds(workdir / f"down-{attempt}", down, ship=True))
    ratio = min(during) / min(quiet)
    print(f"  outage: best {min(during):.2f} s against {min(quiet):.2f} s without a shipper", flush=True)
    return (
        f"| Ingestion while Loki is down | 10,000 lines in 100 requests, shipper backing off | "
        f"best of {rounds}: {min(during):.2f} s against {min(quiet):.2f} s without a shipper: **×{ratio:.2f}** | "
        f"≤ ×1.2 | {'met' if ratio <= 1.2 else '**MISSED**'} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=200_000, help="lines to ship for the throughput run")
    parser.add_argument("--batch", type=int, default=1000, help="records per export (otlp_batch_size)")
    parser.add_argument("--outbox", type=int, default=1_000_000, help="lines waiting for the memory run")
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    parser.add_argument("--no-loki", action="store_true", help="skip the real Loki runs")
    args = parser.parse_args(argv)
    from tests.support.loki_server import loki_binary

    binary, why = (None, "--no-loki") if args.no_loki else loki_binary()
    with tempfile.TemporaryDirectory(prefix="calabi-ship-bench-") as tmp:
        row, complete = throughput(Path(tmp), args.lines, args.batch)
        print(row, flush=True)
        rows = [row]
        if binary is not None:
            loki_rows, whole = real_loki(Path(tmp), binary, args.lines, args.batch)
            print("\n".join(loki_rows), flush=True)
            rows += loki_rows
            complete = complete and whole
        else:
            print(f"no real Loki run: {why}", flush=True)
        rows.append(outage(Path(tmp)))
        rows.append(memory(Path(tmp), args.outbox))
    table = "\n".join(["| Benchmark | Setting | Result | Target | Status |", "|---|---|---|---|---|", *rows])
    print("\n" + table)
    if args.output:
        args.output.write_text(table + "\n", encoding="utf-8")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
