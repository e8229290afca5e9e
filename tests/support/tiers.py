"""The suite's tiers, declared once: where a test lives says what it may use.

``tests/<tier>/``: a test is marked with its tier's name (``-m unit``), may not ask for a
fixture another tier owns (collection stops with the test and the fixture named), and outside
``integration`` it may start no process. The fast subset for day-to-day work is everything but
``integration``: ``.venv/bin/pytest -m "not integration"``; CI runs all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: A real store: SQLite on a temp dir, or a database on the session's PostgreSQL.
STORE_FIXTURES: Final = frozenset({"store", "make_store", "postgres"})
#: The Flask app answering through its test client, in the test's process.
HTTP_FIXTURES: Final = frozenset({"app", "client", "open_app", "scrape"})
#: Real processes on loopback: the exporter served, Prometheus, Loki, S3, the container engine.
SERVER_FIXTURES: Final = frozenset(
    {
        "exporter_process",
        "prometheus_for",
        "lokis",
        "loki",
        "s3",
        "container_engine",
        "exporter_image",
        "compose_server_images",
    }
)


@dataclass(frozen=True)
class Tier:
    name: str
    meaning: str
    forbidden: frozenset[str]  # fixtures a test of this tier may not use
    processes: bool  # whether its tests may start a process


TIERS: Final = {
    tier.name: tier
    for tier in (
        Tier(
            "unit",
            "pure logic: no store, no server, no process",
            STORE_FIXTURES | HTTP_FIXTURES | SERVER_FIXTURES,
            False,
        ),
        Tier("store", "a real store on SQLite or PostgreSQL, no HTTP", HTTP_FIXTURES | SERVER_FIXTURES, False),
        Tier("http", "the app through its test client, over a real store", SERVER_FIXTURES, False),
        Tier(
            "integration",
            "real processes: the exporter served, Prometheus, Alertmanager, Loki, S3, podman",
            frozenset(),
            True,
        ),
    )
}
