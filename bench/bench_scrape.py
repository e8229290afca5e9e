"""Scrape benchmark for large fleets: time, worker memory, and what the per-connection cache saves.

What it measures, side by side in one run:

1. 10,000 connections × 20 streams (one finished job each; about 1.2 M samples),
   served by a real ``calabi-exporter serve`` (defaults: 2 workers): the first
   scrape of each worker (it renders every connection), then 20 scrapes one
   after another (p50, max), then 4 scrapes at once, 5 times; the resident
   memory of every worker is sampled every 50 ms throughout (max).
2. 1,000 connections × 20 streams, in process: a full render (a new renderer,
   nothing kept) against a scrape after 9 connections (0.9 %) got a new job,
   10 times each (p50 of both, and their ratio).
3. 50,000 connections × 20 streams posted with the default budget (10,000
   connections with series of their own, the rest under ``__overflow__``):
   the same as 1, to compare with it.

With ``--before DIR`` (a checkout of an earlier exporter, e.g. a clone of the
old main), the same run also serves the 10,000-connection store with that
checkout's exporter, and both exporters take the same ingest load (5,000
finished jobs with 3 streams, batches of 100 from 4 clients, on a fresh store):
before and after side by side, one machine, one run. Both are measured
``--rounds`` times (default 5), before and after in turn, and each figure is
the median over the rounds with its range: with the client on the same two
cores, one round of concurrent scrapes or ingest varies by 10 to 40 %. The
workers' CPU time per scrape (user + system, from ``/proc``) is the steadier
figure of what a scrape costs the server. A worker of this tree
renders every connection before it serves (``ScrapeRenderer.warm``), so its
start-up (launch to ``/readyz`` answering 200) is timed too.

Run from the project root::

    .venv/bin/python -m bench.bench_scrape              # about 10 minutes on 2 cores
    .venv/bin/python -m bench.bench_scrape --quick      # 2,000 / 200 / 10,000 connections
    git clone -q <old main> /tmp/metrics-before
    .venv/bin/python -m bench.bench_scrape --before /tmp/metrics-before

Results are printed as a Markdown table and written to ``docs/scrape-benchmark.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import requests
from calabi_exporter.config import Config
from calabi_exporter.metric_families import ScrapeSettings, Thresholds
from calabi_exporter.model import Job, StreamResult
from calabi_exporter.scrape import ScrapeRenderer
from calabi_exporter.store import Store

from bench.bench_durable_commit import describe, import_path
from bench.bench_ingest_scrape import Service, free_port, job_record, running, wait_for_workers
from tests.support.processes import children, cpu_seconds

ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT: Final = ROOT / "docs" / "scrape-benchmark.md"
T0: Final = 1_775_462_400.0  # 2026-04-06T08:00:00Z
WORKERS: Final = 2
STREAMS: Final = 20
TARGET_P50: Final = 2.0
TARGET_FIRST: Final = 2.0  # a worker's first scrape, against Prometheus' 10 s default timeout
TARGET_RSS_MIB: Final = 600.0
TARGET_RATIO: Final = 0.25


def fleet_job(n: int, tag: str = "seed", finished: float = T0 + 60) -> Job:
    status = "failed" if n % 4 == 0 else "succeeded"
    return Job(
        job_id=f"{tag}-{n:06d}",
        connection_name=f"Source {n:05d} → Warehouse",
        status=status,
        job_type="sync",
        attempt=1,
        started_at=finished - 45,
        finished_at=finished,
        records_synced=1_000 + n,
        records_failed=n % 7,
        bytes_synced=250_000 + n,
        error_summary="destination rejected rows" if status == "failed" else None,
        streams=tuple(
            StreamResult(name=f"table_{k:02d}", status="succeeded", records_synced=10 * k) for k in range(STREAMS)
        ),
    ).with_derived_fields()


def fill(data_dir: Path, connections: int) -> float:
    store = Store.sqlite(data_dir, synchronous="normal")
    started = time.perf_counter()
    try:
        for start in range(0, connections, 2_000):
            store.ingest.jobs([fleet_job(n) for n in range(start, min(start + 2_000, connections))], endpoint="jobs")
    finally:
        store.close()
    return time.perf_counter() - started


def fill_before(checkout: Path, python_path: str, data_dir: Path, connections: int) -> None:
    """The same store, filled by ``checkout``'s own code: a store this tree opened has a schema too new for it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((python_path, str(checkout)))}
    code = (
        f"from pathlib import Path; from bench.bench_scrape import fill; fill(Path({str(data_dir)!r}), {connections:d})"
    )
    code = code.replace("; ", "\n")
    subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, check=True)


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class RssSampler:
    """The largest resident set of any worker, sampled every 50 ms while running."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler")

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for pid in children(self.master):
                self.peak = max(self.peak, rss_mib(pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def timed_scrape(session: requests.Session, url: str) -> tuple[float, int]:
    started = time.perf_counter()
    response = session.get(url + "/metrics", timeout=300)
    response.raise_for_status()
    return time.perf_counter() - started, len(response.content)


def exporter(data_dir: Path, workdir: Path, label: str, python_path: str | None) -> Service:
    """``calabi-exporter serve`` on ``data_dir``: this tree's, or the checkout's that ``python_path`` imports."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALABI_")}
    env["CALABI_RETENTION__DAYS"] = "36500"
    if python_path is not None:
        env["PYTHONPATH"] = python_path
    console = Path(sys.executable).parent / "calabi-exporter"
    argv = [str(console), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)]
    return Service(label, argv, env, f"http://127.0.0.1:{port}", "/readyz", workdir / f"{label}.log")


def serve_and_scrape(
    data_dir: Path, workdir: Path, label: str, scrapes: int, python_path: str | None = None
) -> dict[str, float]:
    service = exporter(data_dir, workdir, label, python_path)
    launched = time.perf_counter()
    with running(service):
        ready = time.perf_counter() - launched
        first, _ = timed_scrape(requests.Session(), service.base_url)  # the first scrape once ready
        wait_for_workers(service.pid, WORKERS)
        idle = max(rss_mib(pid) for pid in children(service.pid))
        cold: list[float] = [first]
        size = 0
        # Memory is sampled through the whole run: the first scrape of each worker renders everything.
        with RssSampler(service.pid) as sampler:
            with requests.Session() as session:
                # Until both workers have rendered once, a scrape may be a worker's first (its cold render).
                for _ in range(2 * WORKERS):
                    seconds, size = timed_scrape(requests.Session(), service.base_url)
                    cold.append(seconds)
                workers = children(service.pid)
                cpu = cpu_seconds(workers)
                warm = [timed_scrape(session, service.base_url)[0] for _ in range(scrapes)]
                warm_cpu = (cpu_seconds(workers) - cpu) / scrapes
            concurrent: list[float] = []
            lock = threading.Lock()

            def scrape() -> None:
                with requests.Session() as own:
                    for _ in range(5):
                        seconds, _ = timed_scrape(own, service.base_url)
                        with lock:
                            concurrent.append(seconds)

            threads = [threading.Thread(target=scrape) for _ in range(4)]
            cpu = cpu_seconds(workers)
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            concurrent_cpu = (cpu_seconds(workers) - cpu) / len(concurrent)
        samples = requests.get(service.base_url + "/metrics", timeout=300).text.rsplit("calabi_exporter_series ", 1)[1]
    return {
        "ready": ready,
        "first": first,
        "cold_max": max(cold),
        "p50": statistics.median(warm),
        "max": max(warm),
        "concurrent_p50": statistics.median(concurrent),
        "concurrent_max": max(concurrent),
        "cpu": warm_cpu,
        "concurrent_cpu": concurrent_cpu,
        "rss_idle": idle,
        "rss_peak": sampler.peak,
        "bytes": float(size),
        "samples": float(samples.split()[0]),
    }


def ingest_rate(workdir: Path, label: str, python_path: str | None, jobs: int = 5_000) -> tuple[float, float]:
    """Finished jobs per second posted to a fresh exporter in batches of 100 by 4 clients, and the
    workers' CPU milliseconds per job."""
    batches = [
        json.dumps({"jobs": [job_record(n, label, 500) for n in range(start, start + 100)]}).encode()
        for start in range(0, jobs, 100)
    ]
    service = exporter(workdir / f"{label}-data", workdir, label, python_path)
    with running(service):
        wait_for_workers(service.pid, WORKERS)
        failures: list[int] = []
        lock = threading.Lock()

        def post(mine: list[bytes]) -> None:
            with requests.Session() as session:
                for body in mine:
                    response = session.post(
                        service.base_url + "/api/v1/jobs", data=body, headers={"Content-Type": "application/json"}
                    )
                    if response.status_code != 200:
                        with lock:
                            failures.append(response.status_code)

        threads = [threading.Thread(target=post, args=(batches[k::4],)) for k in range(4)]
        workers = children(service.pid)
        cpu = cpu_seconds(workers)
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(workers) - cpu
    if failures:
        raise RuntimeError(f"{label}: {len(failures)} batches refused ({failures[:3]})")
    return jobs / seconds, cpu / jobs * 1000


def incremental(data_dir: Path, rounds: int) -> dict[str, float]:
    """Full render (nothing kept) against a render after 0.9 % of the connections changed, in process."""
    store = Store.sqlite(data_dir, synchronous="normal")
    try:

        def renderer() -> ScrapeRenderer:
            settings = ScrapeSettings(Thresholds.from_config(Config()))
            return ScrapeRenderer(settings, store.metrics.versions, store.metrics.snapshot)

        def timed(render: Callable[[], bytes]) -> float:
            started = time.perf_counter()
            render()
            return time.perf_counter() - started

        full = [timed(renderer().body) for _ in range(rounds)]
        kept = renderer()
        kept.body()
        connections = len(store.metrics.versions())
        changed = max(1, connections * 9 // 1000)
        partial: list[float] = []
        for round_ in range(rounds):
            store.ingest.jobs(
                [fleet_job(n, f"again{round_}", T0 + 3600 + round_) for n in range(changed)], endpoint="jobs"
            )
            partial.append(timed(kept.body))
    finally:
        store.close()
    return {"full": statistics.median(full), "partial": statistics.median(partial), "changed": float(changed)}


def medians(rounds: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds, and its lowest and highest as ``<key>_low`` and ``<key>_high``."""
    out: dict[str, float] = {}
    for key in rounds[0]:
        values = [result[key] for result in rounds]
        out[key], out[f"{key}_low"], out[f"{key}_high"] = statistics.median(values), min(values), max(values)
    return out


def spread(result: dict[str, float], key: str, spec: str, unit: str) -> str:
    """``1.34 s (1.30–1.41)``: a median and its range over the rounds (just the value after one round)."""
    value = f"{result[key]:{spec}} {unit}".strip()
    low, high = result.get(f"{key}_low"), result.get(f"{key}_high")
    if low is None or high is None or low == high:
        return value
    return f"{value} ({low:{spec}}–{high:{spec}})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 / 200 / 10,000 connections")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--before", type=Path, help="a checkout of an earlier exporter to compare with (its exporter/)")
    parser.add_argument("--rounds", type=int, default=5, help="with --before: rounds of before-then-after (median)")
    args = parser.parse_args(argv)
    if args.before is not None and not (args.before / "exporter" / "cli.py").exists():
        parser.error(f"--before {args.before}: no exporter/cli.py there")
    large, small, huge = (2_000, 200, 10_000) if args.quick else (10_000, 1_000, 50_000)
    started = datetime.now(UTC)
    clock = time.perf_counter()
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="calabi-bench-scrape-") as tmp:
        work = Path(tmp)
        print(f"== {large:,} connections × {STREAMS} streams", flush=True)
        fill_large = fill(work / "large", large)
        old: dict[str, float] | None = None
        if args.before is not None:
            before_path = import_path(args.before, work)
            print(f"== the same, served by {args.before}", flush=True)
            fill_before(args.before, before_path, work / "large-before", large)
            befores: list[dict[str, float]] = []
            afters: list[dict[str, float]] = []
            for round_ in range(args.rounds):
                print(f"== round {round_ + 1} of {args.rounds}: before, then after", flush=True)
                befores.append(serve_and_scrape(work / "large-before", work, f"large-before-{round_}", 20, before_path))
                befores[-1]["ingest"], befores[-1]["ingest_cpu"] = ingest_rate(
                    work, f"ingest-before-{round_}", before_path
                )
                afters.append(serve_and_scrape(work / "large", work, f"large-{round_}", 20))
                afters[-1]["ingest"], afters[-1]["ingest_cpu"] = ingest_rate(work, f"ingest-after-{round_}", None)
            old, big = medians(befores), medians(afters)
        else:
            big = serve_and_scrape(work / "large", work, "large", 20)
        print(f"== {huge:,} connections × {STREAMS} streams (default budget: 10,000)", flush=True)
        fill_huge = fill(work / "huge", huge)
        over = serve_and_scrape(work / "huge", work, "huge", 20)
        print(f"== {small:,} connections × {STREAMS} streams, in process", flush=True)
        fill(work / "small", small)
        inc = incremental(work / "small", 10)

    def status(ok: bool) -> str:
        return "met" if ok else "**missed**"

    for label, result, filled in (
        (f"{large:,} × {STREAMS}", big, fill_large),
        (f"{huge:,} × {STREAMS}", over, fill_huge),
    ):
        rows.append(
            f"| Scrape, {label} | **p50 {result['p50']:.2f} s**, max {result['max']:.2f} s; first scrape of a worker"
            f" {result['cold_max']:.2f} s; {result['samples']:,.0f} samples, {result['bytes'] / 1e6:,.0f} MB"
            f" (store filled in {filled:.0f} s) | p50 ≤ {TARGET_P50:.0f} s | {status(result['p50'] <= TARGET_P50)} |"
        )
        rows.append(
            f"| First scrapes after start, {label} | the first once ready **{result['first']:.2f} s**, the slowest"
            f" of the first {2 * WORKERS} **{result['cold_max']:.2f} s**; ready {result['ready']:.1f} s after"
            f" launch | ≤ {TARGET_FIRST:.0f} s | {status(result['cold_max'] <= TARGET_FIRST)} |"
        )
        rows.append(
            f"| 4 scrapes at once, {label} | worker RSS **max {result['rss_peak']:,.0f} MiB** over the run, first"
            f" renders included (idle"
            f" {result['rss_idle']:,.0f} MiB); scrape p50 {result['concurrent_p50']:.2f} s, max"
            f" {result['concurrent_max']:.2f} s | ≤ {TARGET_RSS_MIB:.0f} MiB |"
            f" {status(result['rss_peak'] <= TARGET_RSS_MIB)} |"
        )
    ratio = inc["partial"] / inc["full"]
    rows.append(
        f"| {small:,} × {STREAMS}, {inc['changed']:.0f} connections changed between scrapes (in process) |"
        f" **{inc['partial'] * 1000:.0f} ms** vs full render {inc['full'] * 1000:.0f} ms: {ratio:.0%} |"
        f" ≤ {TARGET_RATIO:.0%} of the full render | {status(ratio <= TARGET_RATIO)} |"
    )
    same = (
        over["samples"] <= big["samples"] * 1.05
        and over["p50"] <= big["p50"] * 1.5 + 0.05
        and over["rss_peak"] <= big["rss_peak"] * 1.25
    )
    rows.append(
        f"| {huge:,} vs {large:,} connections | samples {over['samples']:,.0f} vs {big['samples']:,.0f};"
        f" p50 {over['p50']:.2f} vs {big['p50']:.2f} s; RSS max {over['rss_peak']:,.0f} vs"
        f" {big['rss_peak']:,.0f} MiB | the 10,000 level | {status(same)} |"
    )
    comparison: list[str] = []
    if old is not None:
        comparison = [
            "",
            f"## Before and after, {large:,} × {STREAMS}, in this run",
            "",
            f"Before: `{args.before}` at commit `{describe(args.before)}`; after: this tree."
            f" Same store, same machine; {args.rounds} rounds of before then after, each figure the median over"
            " the rounds (lowest–highest in brackets).",
            "",
            "Before, a worker rendered every connection's lines at its first scrape (reading every aggregate,"
            " building the library's sample objects, writing their lines); now it renders them from the family"
            " table before it accepts a request, so that time moves from the first scrape to the start-up"
            " (launch to ready), and the first scrape is as quick as any later one.",
            "",
            "| | before | after |",
            "|---|---|---|",
            *(
                f"| {what} | {spread(old, key, spec, unit)} | **{spread(big, key, spec, unit)}** |"
                for what, key, spec, unit in (
                    ("Launch to `/readyz` 200", "ready", ".2f", "s"),
                    ("First scrape once ready", "first", ".2f", "s"),
                    ("Slowest of the first scrapes (one per worker and more)", "cold_max", ".2f", "s"),
                    ("Scrape p50 (20 in a row)", "p50", ".2f", "s"),
                    ("Scrape max (20 in a row)", "max", ".2f", "s"),
                    ("4 scrapes at once, p50", "concurrent_p50", ".2f", "s"),
                    ("4 scrapes at once, max", "concurrent_max", ".2f", "s"),
                    ("Worker CPU per scrape, one at a time", "cpu", ".3f", "s"),
                    ("Worker CPU per scrape, 4 at once", "concurrent_cpu", ".3f", "s"),
                    ("Worker RSS, max over the run", "rss_peak", ",.0f", "MiB"),
                    ("Samples", "samples", ",.0f", ""),
                    ("Ingest, batches of 100 from 4 clients", "ingest", ",.0f", "jobs/s"),
                    ("Worker CPU per job ingested", "ingest_cpu", ".3f", "ms"),
                )
            ),
        ]
    seconds = time.perf_counter() - clock
    text = "\n".join(
        [
            "# Scrape benchmark",
            "",
            "Written by `bench/bench_scrape.py` (see its docstring); run it again rather than editing.",
            "",
            f"- date: {started:%Y-%m-%d %H:%M} UTC; run took {seconds / 60:.1f} min"
            + (" (`--quick`: smaller fleets)" if args.quick else ""),
            "- command: `.venv/bin/python -m bench.bench_scrape"
            + (" --quick" if args.quick else "")
            + (f" --before <clone of the old main> --rounds {args.rounds}`" if args.before else "`"),
            f"- `nproc`: {os.cpu_count()}; {platform.platform()}; Python {platform.python_version()}",
            f"- server: `calabi-exporter serve` with its defaults ({WORKERS} workers), client on the same machine",
            "",
            "| Benchmark | Result | Target | Status |",
            "|---|---|---|---|",
            *rows,
            *comparison,
            "",
        ]
    )
    print(text)
    args.output.write_text(text, encoding="utf-8")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
