"""Request body memory: a worker's peak resident memory with N large batches posted at once.

A body is read whole, parsed and turned into records before it is stored, so
each one in progress costs several times its size. For each concurrency a
fresh ``calabi-exporter serve`` with one worker process (the defaults
otherwise) takes N batches of 1,000 job records with 30 streams each (just
under the default ``max_body_bytes`` of 10 MiB each) at once; a client refused with 503 waits
its ``Retry-After`` and sends again, so every batch is stored in the end.
Reported: the worker's peak resident memory (``VmHWM``) and its memory before
the batches, the 503s, and the wall time; with the default
``max_body_bytes_in_flight`` (40 MiB) and with a budget too large to bind
(how the exporter behaved before it had one).

Run from the project root::

    .venv/bin/python -m bench.bench_body_memory            # about 3 minutes on 2 cores

Prints a Markdown table; ``--output`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import requests
from calabi_exporter.config import Config

from bench.bench_ingest_scrape import Service, free_port, running, wait_for_workers
from tests.support.processes import children

RECORDS = 1_000  # jobs per batch
STREAMS = 30  # streams per job: about 10 KB a job, 10 MiB a batch
UNBOUND = 2**31 - 1  # a budget (2 GiB) none of these runs reaches: no bound, as before there was one


def batch(number: int) -> bytes:
    """One NDJSON batch of RECORDS finished jobs of STREAMS streams each, just under max_body_bytes."""
    lines = []
    for n in range(RECORDS):
        record = {
            "job_id": f"batch{number:02d}-job{n:05d}",
            "connection_name": f"Connection {n % 20:02d} → Warehouse",
            "status": "failed" if n % 10 == 0 else "succeeded",
            "started_at": "2026-04-06T08:00:00Z",
            "finished_at": "2026-04-06T08:03:17Z",
            "records_synced": n,
            "bytes_synced": 1000 * n,
            "error_summary": ("timeout reading from the source " * 12) if n % 10 == 0 else None,
            "streams": [
                {"name": f"stream_{s}_{'x' * 240}", "status": "succeeded", "records_synced": n} for s in range(STREAMS)
            ],
        }
        lines.append(json.dumps(record))
    body = ("\n".join(lines) + "\n").encode()
    assert len(body) <= Config().max_body_bytes, len(body)
    return body


def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def post_until_stored(url: str, body: bytes) -> int:
    """Send the batch until it is stored; the 503s it got on the way."""
    refused = 0
    with requests.Session() as session:
        while True:
            response = session.post(
                url + "/api/v1/jobs", data=body, headers={"Content-Type": "application/x-ndjson"}, timeout=3600
            )
            if response.status_code != 503:
                response.raise_for_status()
                assert response.json()["rejected"] == 0
                return refused
            refused += 1
            time.sleep(float(response.headers["Retry-After"]))


def run(concurrency: int, budget: int, bodies: list[bytes], workdir: Path) -> dict[str, float]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALABI_")}
    env.update(CALABI_RETENTION__DAYS="36500", CALABI_MAX_BODY_BYTES_IN_FLIGHT=str(budget))
    data_dir = Path(tempfile.mkdtemp(dir=workdir))
    console = Path(sys.executable).parent / "calabi-exporter"
    argv = [str(console), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir), "--workers", "1"]
    service = Service(
        f"exporter-{concurrency}-{budget}", argv, env, f"http://127.0.0.1:{port}", "/readyz", workdir / "log"
    )
    with running(service):
        wait_for_workers(service.pid, 1)
        (worker,) = children(service.pid)
        before = kib(worker, "VmRSS")
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            refused = sum(pool.map(lambda body: post_until_stored(service.base_url, body), bodies[:concurrency]))
        seconds = time.perf_counter() - started
        peak = kib(worker, "VmHWM")
    return {"before": before / 1024, "peak": peak / 1024, "refused": refused, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    bodies = [batch(n) for n in range(max(args.concurrency))]
    default = Config().max_body_bytes_in_flight
    rows = [
        "| Batches at once | Budget | Worker RSS before | Peak RSS | Peak − before per MiB of body | 503s | Time |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="calabi-body-memory-") as workdir:
        for concurrency in args.concurrency:
            for label, budget in (("none", UNBOUND), (f"{default >> 20} MiB (default)", default)):
                result = run(concurrency, budget, bodies, Path(workdir))
                body_mib = sum(len(b) for b in bodies[:concurrency]) / 2**20
                per_mib = (result["peak"] - result["before"]) / body_mib
                rows.append(
                    f"| {concurrency} × {len(bodies[0]) / 2**20:.1f} MiB | {label} | {result['before']:.0f} MiB "
                    f"| {result['peak']:.0f} MiB | {per_mib:.1f} MiB | {result['refused']:.0f} "
                    f"| {result['seconds']:.1f} s |"
                )
                print(rows[-1], flush=True)
    table = "\n".join(rows)
    header = (
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {platform.node()} ({os.cpu_count()} cores, "
        f"Python {platform.python_version()}) by `bench/bench_body_memory.py`: one worker process, "
        f"batches of {RECORDS:,} job records.\n\n"
    )
    print()
    print(header + table)
    if args.output:
        args.output.write_text(header + table + "\n")


if __name__ == "__main__":
    main()
