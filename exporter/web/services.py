"""What the blueprints share, kept in ``app.extensions`` rather than globals."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from ..config import Config
from ..scrape import ScrapeRenderer
from ..store import Store
from ..timeutil import Clock
from .body_budget import BodyBudget
from .readiness import Readiness

EXTENSION_KEY = "calabi_exporter"
WORKERS_KEY = "calabi_exporter.workers"


@dataclass(frozen=True, slots=True)
class Services:
    config: Config
    store: Store
    clock: Clock
    scrapes: ScrapeRenderer
    readiness: Readiness
    bodies: BodyBudget

    def latest_time(self) -> float:
        """The latest time a record may carry now: the clock plus the allowed skew."""
        return self.clock() + self.config.max_clock_skew_seconds


def services(app: Flask | None = None) -> Services:
    """The services of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    found: Services = target.extensions[EXTENSION_KEY]
    return found
