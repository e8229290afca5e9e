"""Ingest on PostgreSQL with the durable commit, next to an earlier version of the exporter and to SQLite.

An answer from the PostgreSQL store waits until its write's WAL is flushed (see
``exporter/store/postgres.py``, ``_write``). This measures what that costs, on one
machine in one run, each setting a real ``calabi-exporter serve`` (2 workers ×
128 threads) on a fresh store:

1. PostgreSQL, the exporter of another checkout (``--before DIR``, e.g. a clone of
   an earlier commit), when given;
2. PostgreSQL, this tree's exporter;
3. SQLite (``sqlite_synchronous: full``), this tree's exporter.

Each setting posts batches of 100 finished jobs, then one job per request, with
Debian's ``wrk`` (see ``bench_ingest_scrape.py``); the stored jobs must equal the
jobs posted. The settings run in turn, ``--rounds`` times, and each result is
the mean of its rounds. PostgreSQL is Debian's server in a temporary directory
with its durable defaults (``fsync``, ``synchronous_commit`` on). The target:
single-record ingest on PostgreSQL at least 70 % of SQLite's.

Run from the project root::

    git clone -q . /tmp/calabi-before && git -C /tmp/calabi-before checkout -q <commit>
    .venv/bin/python -m bench.bench_durable_commit --before /tmp/calabi-before   # ~4 min on 2 cores

The results replace the section of ``docs/benchmarks.md`` that this benchmark
wrote before (the rest of the file is left alone).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from bench.bench_ingest_scrape import FULL, SECTION_MARK, free_port
from bench.bench_replicas import bench_setting, ingest_options, postgres_and_wrk, replicas
from tests.support.postgres_server import PostgresServer

ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT: Final = ROOT / "docs" / "benchmarks.md"
TARGET_RATIO: Final = 0.70


@dataclass
class Rates:
    """One setting's results, a value per round."""

    label: str
    batch_records_per_s: list[float] = field(default_factory=list)
    single_requests_per_s: list[float] = field(default_factory=list)
    single_p99_ms: list[float] = field(default_factory=list)

    @property
    def single(self) -> float:
        return statistics.fmean(self.single_requests_per_s)

    def row(self) -> str:
        singles = ", ".join(f"{value:,.0f}" for value in self.single_requests_per_s)
        batches = ", ".join(f"{value:,.0f}" for value in self.batch_records_per_s)
        return (
            f"| {self.label} | **{self.single:,.0f} requests/s** (rounds: {singles}; p99 up to"
            f" {max(self.single_p99_ms):,.0f} ms) | **{statistics.fmean(self.batch_records_per_s):,.0f}"
            f" records/s** (rounds: {batches}) |"
        )


def import_path(checkout: Path, workdir: Path) -> str:
    """A directory that makes ``import calabi_exporter`` load ``checkout``'s exporter (a ``PYTHONPATH``)."""
    shim = workdir / "before-import-path"
    shim.mkdir()
    (shim / "calabi_exporter").symlink_to(checkout.resolve() / "exporter")
    return str(shim)


def describe(checkout: Path) -> str:
    """The checkout's commit (its short hash), or its path when it is not a git checkout."""
    result = subprocess.run(
        ["git", "-C", str(checkout), "log", "-1", "--format=%h"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or str(checkout)


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section at the end of ``path`` (or add it), keeping what comes before."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    before = text.split(SECTION_MARK, 1)[0].rstrip("\n")
    path.write_text(f"{before}\n\n{SECTION_MARK}\n{section}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--before", type=Path, help="a checkout of the exporter to compare with (its exporter/)")
    parser.add_argument("--rounds", type=int, default=2)
    ingest_options(parser, DEFAULT_OUTPUT, quick="smaller counts, one round")
    args = parser.parse_args(argv)
    if args.before is not None and not (args.before / "exporter" / "cli.py").exists():
        parser.error(f"--before {args.before}: no exporter/cli.py there")
    bin_dir = postgres_and_wrk(parser)
    rounds = 1 if args.quick else args.rounds
    sizes = replace(FULL, batch_requests=200 if args.quick else 500, single_requests=4_000 if args.quick else 10_000)
    started, clock, load = datetime.now(UTC), time.perf_counter(), os.getloadavg()[0]
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="calabi-bench-durable-") as tmp:
        workdir = Path(tmp)
        before_path = import_path(args.before, workdir) if args.before is not None else None
        settings: list[tuple[Rates, str | None, bool]] = []  # (rates, PYTHONPATH, on PostgreSQL)
        if before_path is not None:
            settings.append((Rates(f"PostgreSQL, before (commit `{describe(args.before)}`)"), before_path, True))
        settings.append((Rates("PostgreSQL, this tree (durable commit)"), None, True))
        settings.append((Rates("SQLite (`sqlite_synchronous: full`), this tree"), None, False))
        postgres = PostgresServer(bin_dir, free_port(), durable=True)
        postgres.start()
        try:
            for number in range(rounds):
                for index, (rates, python_path, on_postgres) in enumerate(settings):
                    url = postgres.new_database() if on_postgres else None
                    services = replicas(workdir, f"r{number}-s{index}", 1, url)
                    if python_path is not None:
                        services[0].env["PYTHONPATH"] = python_path
                    batch, single, ok = bench_setting(
                        rates.label, services, sizes, args.batch_clients, args.clients, workdir
                    )
                    if not ok:
                        problems.append(f"{rates.label}, round {number + 1}: stored jobs differ, or requests failed")
                    rates.batch_records_per_s.append(batch.records / batch.seconds)
                    rates.single_requests_per_s.append(single.requests / single.seconds)
                    rates.single_p99_ms.append(single.p99_ms)
        finally:
            postgres.stop()
    after, sqlite = settings[-2][0], settings[-1][0]
    ratio = after.single / sqlite.single
    lines = [
        "## PostgreSQL's durable commit: before and after, next to SQLite",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC, {(time.perf_counter() - clock) / 60:.1f} min, by"
        f" `.venv/bin/python -m bench.bench_durable_commit{' --before <checkout>' if args.before else ''}"
        f"{' --quick' if args.quick else f' --rounds {rounds}'}`; {platform.platform()}, {os.cpu_count()} cores,"
        f" PostgreSQL {bin_dir.parent.name} (Debian, durable defaults); load average {load:.1f} at the start and"
        f" {os.getloadavg()[0]:.1f} at the end (other work on the machine slows every setting alike). Means of"
        f" {rounds} round(s), settings in turn.",
        "",
        "| Setting | One job per request | Batches of 100 |",
        "|---|---|---|",
        *(rates.row() for rates, _, _ in settings),
        "",
        f"- Single-record ingest, PostgreSQL (this tree) ÷ SQLite: **{ratio:.0%}**"
        f" (target ≥ {TARGET_RATIO:.0%}: {'met' if ratio >= TARGET_RATIO else '**MISSED**'}).",
    ]
    if before_path is not None:
        before = settings[0][0]
        lines.append(
            f"- Single-record ingest, PostgreSQL this tree ÷ before: **{after.single / before.single:.0%}**;"
            f" before ÷ SQLite: {before.single / sqlite.single:.0%}."
        )
    lines += [
        f"- Batches: {sizes.batch_requests:,} requests × {sizes.batch_size} finished jobs over"
        f" {sizes.batch_connections} connections; single: {sizes.single_requests:,} requests over"
        f" {sizes.single_connections:,} connections; {args.batch_clients} and {args.clients} wrk connections. Every"
        " setting is `serve` with 2 workers × 128 threads on a fresh store; client, server and PostgreSQL share the"
        " cores.",
        *([f"- Problems: {'; '.join(problems)}"] if problems else []),
        "",
    ]
    section = "\n".join(lines)
    write_section(args.output, section)
    print("\n" + section)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
