"""Ingestion and scrape benchmark of the exporter, with Pushgateway side by side.

What it measures, each against a real ``calabi-exporter serve`` (gunicorn, default
config: 2 workers × 128 threads) on a free loopback port and a fresh temp data dir:

1. Ingestion, once with the default ``sqlite_synchronous: full`` and once with
   ``CALABI_SQLITE_SYNCHRONOUS=normal``:
   (a) job records/s posting ``{"jobs": [...]}`` batches of 100 finished jobs
       (4 succeeded : 1 failed, 3 streams each, unique ids, 200 connections);
   (b) requests/s posting one job per request (1,000 connections).
   Meanwhile ``GET /healthz`` is sent every 100 ms on a new connection and its
   answer time recorded: what a liveness probe sees while the exporter is busy.
   Afterwards ``/metrics`` must report ``calabi_exporter_stored_jobs`` equal to
   the number of jobs posted, and no request may have failed.
2. Scrape: a store with 1,000 connections × 20 streams (one finished job with
   20 streams per connection) is served and ``GET /metrics`` is timed; then the
   same store is filled to 1,000,000 jobs (in-process through
   ``Store.ingest.jobs``, jobs without streams, same series set) and the
   scrape is timed again: scrape time must not depend on the stored jobs.
3. Pushgateway: Debian's ``prometheus-pushgateway`` (no persistence) receives the
   same per-job summaries as single-record exporter requests, one
   ``PUT /metrics/job/calabi_sync/connection/<name>`` per job, with the same
   client concurrency.

The load generator is Debian's ``wrk`` (C, one thread) running
``bench/wrk_replay.lua``: every request is serialised to a file before the
clock starts and sent exactly once over keep-alive connections; every answer
is checked. Client and server share the machine's cores; that is the stated
condition, so the client's CPU share is reported too.

Run from the project root::

    .venv/bin/python -m bench.bench_ingest_scrape           # full run (~12 min on 2 cores, most of it Pushgateway)
    .venv/bin/python -m bench.bench_ingest_scrape --quick   # smaller counts (~2 min)

Results are printed as a Markdown table and written to ``docs/benchmarks.md``
(overwritten). The exit status is 1 when a correctness check fails (a failed
request, a wrong stored-job count); missed performance targets are reported,
not hidden, and do not change the exit status.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import resource
import shlex
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import requests
from calabi_exporter.model import Job, parse_job
from calabi_exporter.store import Store

from tests.support.processes import children, cpu_seconds, process_tree

ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT: Final = ROOT / "docs" / "benchmarks.md"
#: Where the section of ``bench_durable_commit.py`` starts in the output; a run here keeps it.
SECTION_MARK: Final = "<!-- bench/bench_durable_commit.py writes from here on -->"
PUSHGATEWAY: Final = "/usr/bin/prometheus-pushgateway"
WRK: Final = "/usr/bin/wrk"
EXPORTER_WORKERS: Final = 2  # the defaults of `calabi-exporter serve`
EXPORTER_THREADS: Final = 128
HEALTH_PROBE_INTERVAL: Final = 0.1
WRK_THREADS: Final = 1  # one wrk thread keeps up with these rates and leaves the server the most CPU
T0: Final = 1_775_462_400  # 2026-04-06T08:00:00Z; all job times are after this
STARTUP_TIMEOUT: Final = 60.0
LOAD_TIMEOUT: Final = 1800.0
REQUEST_TIMEOUT: Final = 120.0

# Targets from the brief.
TARGET_BATCH_RECORDS_PER_S: Final = 5_000.0
TARGET_SINGLE_REQUESTS_PER_S: Final = 1_000.0
TARGET_SCRAPE_SECONDS: Final = 1.0
TARGET_SCRAPE_RATIO: Final = 0.20

Kind = Literal["batch", "single", "push"]


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each part does."""

    batch_requests: int
    batch_size: int
    batch_connections: int
    single_requests: int
    single_connections: int
    scrape_connections: int
    scrape_streams: int
    scrape_big_jobs: int
    bulk_batch: int
    scrapes: int

    def batch_load(self, base_url: str, clients: int) -> LoadSpec:
        """Batches of finished jobs, ``batch_requests`` of them over ``clients`` connections."""
        return LoadSpec("batch", base_url, self.batch_requests, self.batch_size, self.batch_connections, "b", clients)

    def single_load(self, base_url: str, clients: int) -> LoadSpec:
        """One job per request, ``single_requests`` of them over ``clients`` connections."""
        return LoadSpec("single", base_url, self.single_requests, 1, self.single_connections, "s", clients)


FULL: Final = Sizes(
    batch_requests=1_000,
    batch_size=100,
    batch_connections=200,
    single_requests=20_000,
    single_connections=1_000,
    scrape_connections=1_000,
    scrape_streams=20,
    scrape_big_jobs=1_000_000,
    bulk_batch=5_000,
    scrapes=20,
)
QUICK: Final = replace(FULL, batch_requests=200, single_requests=4_000, scrape_big_jobs=100_000, scrapes=5)


# --------------------------------------------------------------------------- job data


def connection_name(index: int) -> str:
    """Connection names as people write them; every 10th needs base64 in a Pushgateway URL."""
    if index % 10 == 0:
        return f"shop-{index:04d}/orders → warehouse"
    return f"conn-{index:04d}-postgres-bigquery"


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_record(index: int, tag: str, connections: int, streams: int = 3) -> dict[str, Any]:
    """One finished job as a client posts it: 4 of 5 succeed, the failed ones fail one stream."""
    failed = index % 5 == 0
    started = T0 + index * 3
    duration = 20 + (index * 7919) % 900
    stream_list: list[dict[str, Any]] = []
    for k in range(streams):
        stream_failed = failed and k == 0
        stream_list.append(
            {
                "name": f"public.table_{k:02d}",
                "status": "failed" if stream_failed else "succeeded",
                "records_synced": 0 if stream_failed else 100 + (index + k) % 1000,
                "bytes_synced": 0 if stream_failed else 20_000 + (index * 31 + k) % 50_000,
                "duration_seconds": float(duration) / streams,
            }
        )
    return {
        "job_id": f"{tag}-{index:09d}",
        "connection_name": connection_name(index % connections),
        "connection_id": f"c{index % connections:06d}",
        "source": "postgres",
        "destination": "bigquery",
        "status": "failed" if failed else "succeeded",
        "job_type": "sync",
        "attempt": 1,
        "started_at": rfc3339(started),
        "finished_at": rfc3339(started + duration),
        "records_synced": sum(s["records_synced"] for s in stream_list),
        "records_failed": 3 if failed else 0,
        "bytes_synced": sum(s["bytes_synced"] for s in stream_list),
        "error_summary": "destination rejected rows: column type mismatch" if failed else None,
        "streams": stream_list,
    }


def pushgateway_path(connection: str) -> str:
    """The grouping-key path; values with ``/`` or non-ASCII go base64url-encoded."""
    if connection.isascii() and "/" not in connection and connection:
        return f"/metrics/job/calabi_sync/connection/{urllib.parse.quote(connection, safe='')}"
    encoded = base64.urlsafe_b64encode(connection.encode()).decode().rstrip("=")
    return f"/metrics/job/calabi_sync/connection@base64/{encoded}"


def pushgateway_body(record: dict[str, Any]) -> bytes:
    """The per-job Summary in the text format, as a Pushgateway client would push it."""
    streams = record["streams"]
    started = datetime.fromisoformat(record["started_at"]).timestamp()
    finished = datetime.fromisoformat(record["finished_at"]).timestamp()
    values = {
        "records_synced": record["records_synced"],
        "records_failed": record["records_failed"],
        "bytes_synced": record["bytes_synced"],
        "duration_seconds": finished - started,
        "streams_succeeded": sum(s["status"] == "succeeded" for s in streams),
        "streams_failed": sum(s["status"] == "failed" for s in streams),
        "finished_timestamp_seconds": finished,
    }
    lines: list[str] = []
    for name, value in values.items():
        lines.append(f"# TYPE calabi_sync_last_job_{name} gauge")
        lines.append(f"calabi_sync_last_job_{name} {value}")
    lines.append("# TYPE calabi_sync_last_job_status gauge")
    for status in ("succeeded", "failed", "cancelled"):
        lines.append(f'calabi_sync_last_job_status{{status="{status}"}} {int(record["status"] == status)}')
    lines.append("# TYPE calabi_sync_last_job_info gauge")
    lines.append(f'calabi_sync_last_job_info{{job_id="{record["job_id"]}"}} 1')
    return ("\n".join(lines) + "\n").encode()


# --------------------------------------------------------------------------- load generator


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What the load generator sends, over ``clients`` keep-alive connections."""

    kind: Kind
    base_url: str
    requests: int
    batch_size: int
    connections: int
    tag: str
    clients: int


@dataclass(frozen=True, slots=True)
class Prepared:
    method: str
    path: str
    body: bytes
    content_type: str


def prepare(spec: LoadSpec) -> list[Prepared]:
    """Every request of a run, serialised before the clock starts."""
    out: list[Prepared] = []
    for r in range(spec.requests):
        if spec.kind == "batch":
            jobs = [job_record(r * spec.batch_size + i, spec.tag, spec.connections) for i in range(spec.batch_size)]
            body = json.dumps({"jobs": jobs}, separators=(",", ":")).encode()
            out.append(Prepared("POST", "/api/v1/jobs", body, "application/json"))
        elif spec.kind == "single":
            body = json.dumps(job_record(r, spec.tag, spec.connections), separators=(",", ":")).encode()
            out.append(Prepared("POST", "/api/v1/jobs", body, "application/json"))
        else:
            record = job_record(r, spec.tag, spec.connections)
            path = pushgateway_path(record["connection_name"])
            out.append(Prepared("PUT", path, pushgateway_body(record), "text/plain; version=0.0.4"))
    return out


@dataclass(frozen=True, slots=True)
class LoadResult:
    kind: Kind
    requests: int
    records: int
    failed: int
    failures: list[str]
    seconds: float
    client_cpu: float
    server_cpu: float
    p50_ms: float
    p99_ms: float
    health_ms: list[float] = field(default_factory=list)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds


def write_requests(path: Path, items: Sequence[Prepared]) -> None:
    """The request file ``wrk_replay.lua`` reads: one tab-separated request per line."""
    with path.open("wb") as out:
        for item in items:
            body = item.body.replace(b"\n", b"\x1e")
            if b"\t" in body or b"\x1e" in item.body:
                raise ValueError("request bodies must not contain tabs or \\x1e")
            out.write(f"{item.method}\t{item.path}\t{item.content_type}\t".encode() + body + b"\n")


def run_wrk(argv: Sequence[str]) -> str:
    """Run wrk until each of its threads has printed THREAD_DONE, then SIGINT it for its summary."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines: list[str] = []
    done = 0
    for line in process.stdout:  # ends when wrk exits: after SIGINT, its -d window, or a crash
        lines.append(line)
        if line.strip() == "THREAD_DONE":
            done += 1
            if done == WRK_THREADS:
                process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}: {''.join(lines)[-800:]}")
    return "".join(lines)


def run_load(spec: LoadSpec, server_pid: int, workdir: Path) -> LoadResult:
    """Send every request of ``spec`` once with wrk; its client CPU comes from the child's rusage."""
    requests_file = workdir / f"requests-{spec.kind}-{spec.tag}.txt"
    write_requests(requests_file, prepare(spec))
    ok_statuses, expect = ("200,202", None) if spec.kind == "push" else ("200", "accepted")
    argv = [
        WRK,
        "--threads",
        str(WRK_THREADS),
        "--connections",
        str(spec.clients),
        "--duration",
        f"{LOAD_TIMEOUT:.0f}s",
        "--timeout",
        f"{REQUEST_TIMEOUT:.0f}s",
        "--script",
        str(ROOT / "bench" / "wrk_replay.lua"),
        spec.base_url,
        "--",
        str(requests_file),
        str(WRK_THREADS),
        str(spec.batch_size),
        ok_statuses,
        *([expect] if expect else []),
    ]
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = process_tree_cpu(server_pid)
    # Pushgateway has no /healthz: only the exporter is probed.
    with health_probe(spec.base_url, enabled=spec.kind != "push") as health_ms:
        stdout = run_wrk(argv)
    server_cpu = process_tree_cpu(server_pid) - cpu_before
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    result_line = next((line for line in stdout.splitlines() if line.startswith("RESULT ")), None)
    if result_line is None:
        raise RuntimeError(f"wrk printed no result: {stdout[-800:]}")
    values = dict(item.split("=", 1) for item in result_line.split()[1:])
    failures = [line.removeprefix("FAILURE ") for line in stdout.splitlines() if line.startswith("FAILURE ")]
    sent = int(values["sent"])
    missing = spec.requests - sent
    if missing:
        failures.append(f"{missing} requests unanswered")
    return LoadResult(
        kind=spec.kind,
        requests=sent,
        records=int(values["records"]),
        failed=int(values["failed"]) + missing,
        failures=failures,
        seconds=float(values["seconds"]),
        client_cpu=client_cpu,
        server_cpu=server_cpu,
        p50_ms=float(values["p50_ms"]),
        p99_ms=float(values["p99_ms"]),
        health_ms=health_ms,
    )


@contextmanager
def health_probe(base_url: str, *, enabled: bool = True) -> Iterator[list[float]]:
    """Time ``GET /healthz`` every 100 ms, each on a new connection, while the body runs.

    A failed or non-200 probe counts as its full timeout, so a starved
    server shows in the maximum rather than vanishing from the list.
    """

    times: list[float] = []
    if not enabled:
        yield times
        return
    stop = threading.Event()

    def probe() -> None:
        while not stop.wait(HEALTH_PROBE_INTERVAL):
            start = time.perf_counter()
            try:
                ok = requests.get(base_url + "/healthz", timeout=REQUEST_TIMEOUT).status_code == 200
            except requests.RequestException:
                ok = False
            times.append((time.perf_counter() - start) * 1000 if ok else REQUEST_TIMEOUT * 1000)

    thread = threading.Thread(target=probe, name="health-probe")
    thread.start()
    try:
        yield times
    finally:
        stop.set()
        thread.join()


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_tree_cpu(root: int) -> float:
    """User + system CPU seconds of ``root`` and its live descendants (gunicorn master and workers)."""
    return cpu_seconds(process_tree(root))


def wait_for_workers(master: int, workers: int) -> None:
    """Wait until gunicorn has forked every worker and they have had time to load the app.

    ``/readyz`` answers as soon as one worker is up; keep-alive connections
    opened before the others exist would all stay with that one worker.
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if len(children(master)) >= workers:
            time.sleep(2.0)
            return
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not start {workers} workers in {STARTUP_TIMEOUT:.0f} s")


@dataclass(slots=True)
class Service:
    """A server subprocess we started, stopped by its own pid."""

    name: str
    argv: list[str]
    env: dict[str, str]
    base_url: str
    ready_path: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.base_url + self.ready_path, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {STARTUP_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # our own session: the master and its workers
            self.process.wait(timeout=10)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@contextmanager
def running(service: Service) -> Iterator[Service]:
    try:
        service.start()
        yield service
    finally:
        service.stop()


def exporter_service(data_dir: Path, log_dir: Path, synchronous: str) -> Service:
    """``calabi-exporter serve`` with the default workers and threads; only the sync mode may differ."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALABI_")}
    # The jobs are dated from 2026-04-06 (T0): keep them all, whatever today's date, so no purge runs.
    env["CALABI_RETENTION__DAYS"] = "36500"
    if synchronous != "full":
        env["CALABI_SQLITE_SYNCHRONOUS"] = synchronous
    console_script = Path(sys.executable).parent / "calabi-exporter"
    command = [str(console_script)] if console_script.exists() else [sys.executable, "-m", "calabi_exporter"]
    argv = [
        *command,
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--data-dir",
        str(data_dir),
        "--workers",
        str(EXPORTER_WORKERS),
        "--threads",
        str(EXPORTER_THREADS),
    ]
    return Service(
        "calabi-exporter",
        argv,
        env,
        f"http://127.0.0.1:{port}",
        "/readyz",
        log_dir / f"exporter-{port}.log",
    )


def pushgateway_service(log_dir: Path, extra_args: Sequence[str] = ()) -> Service:
    """Pushgateway in memory only: no ``--persistence.file``."""
    port = free_port()
    argv = [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn", *extra_args]
    log = log_dir / f"pushgateway-{port}.log"
    return Service("pushgateway", argv, dict(os.environ), f"http://127.0.0.1:{port}", "/-/ready", log)


# --------------------------------------------------------------------------- scrapes


@dataclass(frozen=True, slots=True)
class ScrapeResult:
    label: str
    stored_jobs: int
    cold_s: float
    median_s: float
    max_s: float
    body_bytes: int
    samples: int


def metric_value(body: bytes, name: str, labels: str = "") -> float | None:
    """A sample's value from a text-format body; ``labels`` as rendered, e.g. ``{a="b"}``."""
    prefix = f"{name}{labels} ".encode()
    for line in body.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :].split()[0])
    return None


def count_samples(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def timed_get(session: requests.Session, url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    response = session.get(url, timeout=REQUEST_TIMEOUT)
    body = response.content
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, body


def time_scrapes(base_url: str, label: str, scrapes: int) -> ScrapeResult:
    """One cold scrape, six warm-ups (a few for each worker process), then ``scrapes`` timed ones.

    A fresh server's first scrapes per worker are slower (page cache, allocator), so warming each
    worker up keeps the comparison between the two stores about the stores.
    """
    session = requests.Session()
    url = base_url + "/metrics"
    cold, body = timed_get(session, url)
    for _ in range(6):
        timed_get(session, url)
    times: list[float] = []
    for _ in range(scrapes):
        elapsed, body = timed_get(session, url)
        times.append(elapsed)
    stored = metric_value(body, "calabi_exporter_stored_jobs")
    return ScrapeResult(
        label=label,
        stored_jobs=int(stored) if stored is not None else -1,
        cold_s=cold,
        median_s=statistics.median(times),
        max_s=max(times),
        body_bytes=len(body),
        samples=count_samples(body),
    )


def connection_status(index: int) -> str:
    """Every job of a connection has one status, so 1k and 1M jobs expose the same series."""
    return "failed" if index % 4 == 0 else "succeeded"


def seed_jobs(sizes: Sizes) -> list[Job]:
    """One finished job per connection, each with all of the connection's streams (validated like HTTP input)."""
    jobs: list[Job] = []
    for c in range(sizes.scrape_connections):
        record = job_record(c, "seed", sizes.scrape_connections, streams=sizes.scrape_streams)
        status = connection_status(c)
        record["status"] = status
        record["error_summary"] = "destination rejected rows" if status == "failed" else None
        jobs.append(parse_job(record))
    return jobs


def bulk_jobs(start: int, count: int, connections: int) -> list[Job]:
    """Finished jobs without streams, finishing after every seed job."""
    jobs: list[Job] = []
    for i in range(start, start + count):
        c = i % connections
        started = float(T0 + 86_400 + i)
        jobs.append(
            Job(
                job_id=f"bulk-{i:09d}",
                connection_name=connection_name(c),
                status=connection_status(c),
                job_type="sync",
                attempt=1,
                started_at=started,
                finished_at=started + 45.0,
                records_synced=1_000 + i % 5_000,
                records_failed=0,
                bytes_synced=250_000 + i % 100_000,
                streams_succeeded=20,
                streams_failed=0,
            ).with_derived_fields()
        )
    return jobs


def fill_store(data_dir: Path, total: int, sizes: Sizes) -> tuple[int, float]:
    """Add bulk jobs until the store holds ``total``; returns (jobs added, seconds)."""
    store = Store.sqlite(data_dir, synchronous="normal")
    try:
        stored = store.metrics.snapshot().stored_jobs
        started = time.perf_counter()
        added = 0
        next_index = stored - sizes.scrape_connections
        while stored + added < total:
            count = min(sizes.bulk_batch, total - stored - added)
            result = store.ingest.jobs(bulk_jobs(next_index, count, sizes.scrape_connections), endpoint="jobs")
            if result.count("accepted") != count:
                raise RuntimeError(f"bulk fill: {result.count('accepted')} of {count} accepted")
            added += count
            next_index += count
            if added % 100_000 < sizes.bulk_batch:
                rate = added / (time.perf_counter() - started)
                print(f"    filled {stored + added:,} jobs ({rate:,.0f} jobs/s)", flush=True)
        return added, time.perf_counter() - started
    finally:
        store.close()


# --------------------------------------------------------------------------- the benchmark


@dataclass(slots=True)
class Row:
    benchmark: str
    setting: str
    result: str
    target: str = ""
    status: str = ""


@dataclass(slots=True)
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, benchmark: str, setting: str, result: str, target: str = "", ok: bool | None = None) -> None:
        status = "" if ok is None else ("met" if ok else "**MISSED**")
        self.rows.append(Row(benchmark, setting, result, target, status))
        print(f"  {benchmark} [{setting}]: {result} {f'(target {target}: {status})' if target else ''}", flush=True)

    def table(self) -> str:
        lines = ["| Benchmark | Setting | Result | Target | Status |", "|---|---|---|---|---|"]
        lines += [f"| {r.benchmark} | {r.setting} | {r.result} | {r.target} | {r.status} |" for r in self.rows]
        return "\n".join(lines)


def load_row(result: LoadResult, cores: int) -> str:
    """CPU share: how much of the machine the server and the client used during the run."""
    return (
        f"{result.requests:,} requests in {result.seconds:.1f} s;"
        f" p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms;"
        f" CPU server {result.server_cpu / result.seconds:.2f} + client {result.client_cpu / result.seconds:.2f}"
        f" of {cores} cores{health_summary(result.health_ms)}"
    )


def health_summary(times: Sequence[float]) -> str:
    if not times:
        return ""
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"; `/healthz` meanwhile p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms, max {ordered[-1]:.1f} ms"


def check_load(report: Report, label: str, result: LoadResult) -> None:
    if result.failed:
        report.problems.append(f"{label}: {result.failed} failed requests, e.g. {result.failures}")


def bench_ingestion(
    report: Report, sizes: Sizes, batch_clients: int, clients: int, synchronous: str, workdir: Path
) -> tuple[LoadResult, LoadResult]:
    print(f"\n== ingestion, sqlite_synchronous={synchronous}", flush=True)
    data_dir = workdir / f"ingest-{synchronous}"
    service = exporter_service(data_dir, workdir, synchronous)
    cores = os.cpu_count() or 1
    setting = f"sync={synchronous}"
    with running(service):
        wait_for_workers(service.pid, EXPORTER_WORKERS)
        base = sizes.batch_load(service.base_url, batch_clients)
        batch = run_load(base, service.pid, workdir)
        check_load(report, f"batch ({setting})", batch)
        report.add(
            "Ingest, batches of 100",
            setting,
            f"**{batch.records_per_s:,.0f} records/s** ({load_row(batch, cores)})",
            f"≥ {TARGET_BATCH_RECORDS_PER_S:,.0f} records/s",
            batch.records_per_s >= TARGET_BATCH_RECORDS_PER_S,
        )
        single = run_load(sizes.single_load(service.base_url, clients), service.pid, workdir)
        check_load(report, f"single ({setting})", single)
        report.add(
            "Ingest, one job per request",
            setting,
            f"**{single.requests_per_s:,.0f} requests/s** ({load_row(single, cores)})",
            f"≥ {TARGET_SINGLE_REQUESTS_PER_S:,.0f} requests/s",
            single.requests_per_s >= TARGET_SINGLE_REQUESTS_PER_S,
        )
        posted = sizes.batch_requests * sizes.batch_size + sizes.single_requests
        body = requests.get(service.base_url + "/metrics", timeout=REQUEST_TIMEOUT).content
        stored = metric_value(body, "calabi_exporter_stored_jobs")
        accepted = metric_value(body, "calabi_exporter_ingested_records_total", '{endpoint="jobs",outcome="accepted"}')
        ok = stored == posted and accepted == posted and not batch.failed and not single.failed
        report.add(
            "Ingest check",
            setting,
            f"posted {posted:,}; stored_jobs {stored:,.0f}; accepted counter {accepted:,.0f};"
            f" failed requests {batch.failed + single.failed}",
            "all stored, none failed",
            ok,
        )
        if not ok:
            report.problems.append(f"ingest check ({setting}): posted {posted}, stored {stored}, accepted {accepted}")
    db = data_dir / "calabi-exporter.sqlite3"
    if db.exists():
        report.notes.append(f"Ingest store ({setting}) after the run: {db.stat().st_size / 1e6:,.0f} MB.")
    return batch, single


def bench_pushgateway(
    report: Report, sizes: Sizes, clients: int, workdir: Path, extra_args: Sequence[str] = ()
) -> LoadResult:
    setting = " ".join(f"`{a}`" for a in extra_args) or "defaults, no persistence"
    print(f"\n== pushgateway ({setting})", flush=True)
    service = pushgateway_service(workdir, extra_args)
    with running(service):
        spec = LoadSpec(
            kind="push",
            base_url=service.base_url,
            requests=sizes.single_requests,
            batch_size=1,
            connections=sizes.single_connections,
            tag="s",
            clients=clients,
        )
        result = run_load(spec, service.pid, workdir)
        check_load(report, f"pushgateway ({setting})", result)
        groups = requests.get(service.base_url + "/api/v1/metrics", timeout=REQUEST_TIMEOUT).json()["data"]
        expected = min(sizes.single_connections, sizes.single_requests)
        report.add(
            "Pushgateway, one PUT per job",
            setting,
            f"**{result.requests_per_s:,.0f} pushes/s** ({load_row(result, os.cpu_count() or 1)});"
            f" {len(groups):,} groups held",
        )
        if len(groups) != expected:
            report.problems.append(f"pushgateway holds {len(groups)} groups, expected {expected}")
    return result


def bench_scrape(report: Report, sizes: Sizes, workdir: Path) -> None:
    data_dir = workdir / "scrape"
    shape = f"{sizes.scrape_connections:,} conn × {sizes.scrape_streams} streams"
    print(f"\n== scrape, {shape}", flush=True)
    store = Store.sqlite(data_dir, synchronous="normal")
    try:
        store.ingest.jobs(seed_jobs(sizes), endpoint="jobs")
    finally:
        store.close()

    small = serve_and_scrape(data_dir, workdir, f"{sizes.scrape_connections:,} jobs", sizes.scrapes)
    report_scrape(report, shape, small, sizes.scrape_connections)

    print(f"  filling the store to {sizes.scrape_big_jobs:,} jobs in-process", flush=True)
    added, seconds = fill_store(data_dir, sizes.scrape_big_jobs, sizes)
    db_size = (data_dir / "calabi-exporter.sqlite3").stat().st_size
    report.add(
        "Store fill (in-process `Store.ingest.jobs`)",
        f"{sizes.bulk_batch:,} jobs per call, sync=normal",
        f"{added:,} jobs in {seconds:.0f} s ({added / seconds:,.0f} jobs/s); DB {db_size / 1e6:,.0f} MB",
    )

    big = serve_and_scrape(data_dir, workdir, f"{sizes.scrape_big_jobs:,} jobs", sizes.scrapes)
    report_scrape(report, shape, big, sizes.scrape_big_jobs)

    ratio = big.median_s / small.median_s - 1
    report.add(
        "Scrape vs stored jobs",
        f"{sizes.scrape_big_jobs:,} vs {sizes.scrape_connections:,} jobs",
        f"median {big.median_s * 1000:,.0f} ms vs {small.median_s * 1000:,.0f} ms ({ratio:+.1%});"
        f" samples {big.samples:,} vs {small.samples:,}",
        f"within ±{TARGET_SCRAPE_RATIO:.0%}",
        abs(ratio) <= TARGET_SCRAPE_RATIO,
    )


def serve_and_scrape(data_dir: Path, workdir: Path, label: str, scrapes: int) -> ScrapeResult:
    service = exporter_service(data_dir, workdir, "full")
    with running(service):
        return time_scrapes(service.base_url, label, scrapes)


def report_scrape(report: Report, shape: str, result: ScrapeResult, expected_jobs: int) -> None:
    report.add(
        "Scrape `GET /metrics`",
        f"{shape}, {result.label} stored",
        f"**median {result.median_s * 1000:,.0f} ms**, max {result.max_s * 1000:,.0f} ms"
        f" (cold first scrape {result.cold_s * 1000:,.0f} ms); {result.body_bytes / 1e6:.1f} MB,"
        f" {result.samples:,} samples",
        f"< {TARGET_SCRAPE_SECONDS:g} s",
        result.max_s < TARGET_SCRAPE_SECONDS,
    )
    if result.stored_jobs != expected_jobs:
        report.problems.append(f"scrape store: stored_jobs {result.stored_jobs}, expected {expected_jobs}")


# --------------------------------------------------------------------------- output


def machine_facts(workdir: Path) -> list[str]:
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    cpu = "unknown"
    with suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    mem = "unknown"
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    fs = subprocess.run(["df", "-T", str(workdir)], capture_output=True, text=True, check=False).stdout.splitlines()
    fs_type = fs[-1].split()[1] if len(fs) > 1 else "unknown"
    pg = subprocess.run([PUSHGATEWAY, "--version"], capture_output=True, text=True, check=False)
    pg_version = (pg.stdout or pg.stderr).splitlines()[0] if Path(PUSHGATEWAY).exists() else "not installed"
    return [
        f"- `nproc`: {nproc}; CPU: {cpu}; memory: {mem}",
        f"- {platform.platform()}; Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}",
        f"- data dirs on {fs_type} (`{tempfile.gettempdir()}`); {pg_version}",
    ]


def command_line() -> str:
    python = Path(sys.executable)
    try:
        python_text = str(python.relative_to(ROOT))
    except ValueError:
        python_text = str(python)
    return shlex.join([python_text, "-m", __spec__.name if __spec__ else __name__, *sys.argv[1:]])


def write_markdown(path: Path, report: Report, facts: Sequence[str], started: datetime, seconds: float) -> str:
    problems = report.problems or ["none"]
    text = "\n".join(
        [
            "# Benchmarks",
            "",
            "Ingestion and scrape performance of `calabi-exporter serve`, with Debian's Pushgateway side by side.",
            "Written by `bench/bench_ingest_scrape.py` (see its docstring for what each row measures); do not edit",
            "by hand, run the benchmark again (the section at the end is `bench/bench_durable_commit.py`'s).",
            "",
            f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')}; run took {seconds / 60:.1f} min",
            *facts,
            f"- command (from the project root): `{command_line()}`",
            "",
            report.table(),
            "",
            "## Notes",
            "",
            *[f"- {note}" for note in report.notes],
            "",
            "## Correctness problems",
            "",
            *[f"- {problem}" for problem in problems],
            "",
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + _kept_section(path), encoding="utf-8")
    return text


def _kept_section(path: Path) -> str:
    """The section another benchmark wrote at the end of ``path`` (from its mark on), kept as it is."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    return "\n" + SECTION_MARK + old.split(SECTION_MARK, 1)[1] if SECTION_MARK in old else ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller counts; scrape store of 100k instead of 1M jobs")
    parser.add_argument("--batch-clients", type=int, default=4, help="wrk connections posting batches (default: 4)")
    parser.add_argument(
        "--clients",
        type=int,
        default=16,
        help="wrk connections for single-record posts and Pushgateway pushes (default: 16)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown results file (overwritten)")
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 64 and 1 <= args.batch_clients <= 64):
        parser.error("--clients and --batch-clients must be 1..64")
    if not Path(WRK).exists():
        parser.error(f"{WRK} not found: install Debian's wrk (apt-get install wrk)")
    sizes = QUICK if args.quick else FULL
    started = datetime.now(UTC)
    clock = time.perf_counter()
    report = Report()
    report.notes += [
        f"Server: `calabi-exporter serve --workers {EXPORTER_WORKERS} --threads {EXPORTER_THREADS}`"
        " (gunicorn gthread), default config"
        " apart from `CALABI_SQLITE_SYNCHRONOUS` where the setting says `sync=normal`"
        " and a retention long enough to keep the data set (dated from 2026-04-06);"
        " the load starts once every worker is up. Load generator: Debian's `wrk` (one thread) replaying"
        " requests serialised beforehand, each sent once, with `bench/wrk_replay.lua`, over keep-alive"
        f" connections, each with one request in flight (closed loop): {args.batch_clients} connections post the"
        f" batches, {args.clients} the single records and the Pushgateway pushes. Client and server share the"
        " machine's cores; a request counts as done when its answer is in, and every answer is checked (HTTP"
        " status, and the `accepted` count for the exporter).",
        f"Batches: {sizes.batch_requests:,} requests × {sizes.batch_size} finished jobs (3 streams each,"
        f" 1 in 5 failed) over {sizes.batch_connections} connections. Single: {sizes.single_requests:,} requests,"
        f" one finished job each, over {sizes.single_connections:,} connections, posted after the batches into the"
        " same store.",
        "CPU is user+system time of the gunicorn master and workers (from /proc) and of wrk (its rusage),"
        " divided by the wall time: it shows how the cores were shared.",
        f"Pushgateway: the same {sizes.single_requests:,} per-job summaries (records/bytes synced, records failed,"
        " duration, streams succeeded/failed, status, finish time) as one `PUT /metrics/job/calabi_sync/"
        "connection/<name>` each (base64url path segment for names with `/` or non-ASCII), same client"
        " concurrency. By default Pushgateway checks the consistency of everything it holds on every push, so"
        " its push cost grows with the groups held (1,000 here); it is run a second time with"
        " `--push.disable-consistency-check` to show that cost.",
        f"Scrape store: one finished job with {sizes.scrape_streams} streams per connection, then jobs without"
        f" streams added in-process with `Store.ingest.jobs` ({sizes.bulk_batch:,} per call) up to"
        f" {sizes.scrape_big_jobs:,}; every job of a connection has the same status (1 in 4 connections failing),"
        " so both stores expose exactly the same series. Scrapes: one cold, six warm-ups, then"
        f" {sizes.scrapes} timed (median and max); the target applies to the max.",
    ]
    if args.quick:
        report.notes.append(
            f"`--quick` run: smaller counts, and the large scrape store holds {sizes.scrape_big_jobs:,} jobs,"
            " not 1,000,000."
        )
    with tempfile.TemporaryDirectory(prefix="calabi-bench-") as tmp:
        workdir = Path(tmp)
        facts = machine_facts(workdir)
        try:
            _, single_full = bench_ingestion(report, sizes, args.batch_clients, args.clients, "full", workdir)
            _, single_normal = bench_ingestion(report, sizes, args.batch_clients, args.clients, "normal", workdir)
            if Path(PUSHGATEWAY).exists():
                push = bench_pushgateway(report, sizes, args.clients, workdir)
                unchecked = bench_pushgateway(
                    report, sizes, args.clients, workdir, ["--push.disable-consistency-check"]
                )
                for label, single, gateway, gateway_label in (
                    ("full", single_full, push, "default"),
                    ("normal", single_normal, push, "default"),
                    ("full", single_full, unchecked, "no consistency check"),
                ):
                    report.add(
                        "Exporter vs Pushgateway",
                        f"single-record jobs/s (sync={label}) ÷ pushes/s ({gateway_label})",
                        f"{single.requests_per_s:,.0f} / {gateway.requests_per_s:,.0f} ="
                        f" **{single.requests_per_s / gateway.requests_per_s:.2f}×**",
                    )
            else:
                report.problems.append(f"{PUSHGATEWAY} not found; Pushgateway comparison skipped")
            bench_scrape(report, sizes, workdir)
        except Exception as error:
            report.problems.append(f"benchmark aborted: {error}")
            print(f"\nERROR: {error}", file=sys.stderr)
    elapsed = time.perf_counter() - clock
    text = write_markdown(args.output, report, facts, started, elapsed)
    print("\n" + text)
    print(f"written to {args.output}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
