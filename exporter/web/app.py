"""The Flask application factory."""

from __future__ import annotations

import os

from flask import Flask
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.registry import Collector
from werkzeug.routing import PathConverter

from ..config import Config
from ..metric_families import ScrapeSettings, Thresholds
from ..scrape import ScrapeRenderer
from ..store import Store
from ..store.sqlstore import replica_name
from ..timeutil import Clock, system_clock
from ..workers import BackgroundWorkers
from . import incoming_webhook, ingest, landing, ops, read_api, sources
from .admission import register_admission
from .body_budget import BodyBudget
from .errors import register_error_handlers
from .readiness import Readiness
from .services import EXTENSION_KEY, WORKERS_KEY, Services


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    clock: Clock = system_clock,
    server_worker: bool = False,
) -> Flask:
    """Build the exporter's WSGI app; start nothing.

    ``store`` defaults to the one the configuration names; tests hand in their
    own store and clock. An app that opens its own store also builds the
    background workers its configuration asks for (:func:`background_workers`),
    for whoever runs the app to start and stop. ``server_worker``: the app is
    the whole of a server worker process (``serve``), which may freeze what its
    start-up made out of the cyclic garbage collector's way.
    """
    app = Flask("calabi_exporter", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    route_every_path_as_sent(app)
    owns_store = store is None
    if store is None:
        store = Store.from_config(config, clock=clock, replica=replica_name(os.getppid() if server_worker else None))
    settings = ScrapeSettings(
        Thresholds.from_config(config),
        clock=clock,
        s3_export=config.s3_export_enabled,
        webhook_endpoints=tuple(e.name for e in config.webhooks),
        streams_exposed=config.streams_exposed,
        pollers=config.pollers,
    )
    scrapes = ScrapeRenderer(
        settings,
        store.metrics.versions,
        store.metrics.snapshot,
        replica_view=store.metrics.replica_view,
        freeze_first_render=server_worker,
        runtime=runtime_collectors(),
    )
    app.extensions[EXTENSION_KEY] = Services(
        config=config,
        store=store,
        clock=clock,
        scrapes=scrapes,
        readiness=Readiness(store.check_ready, clock=clock, prepare=scrapes.warm),
        bodies=BodyBudget(config.max_body_bytes_in_flight),
    )
    register_admission(app)
    app.register_blueprint(landing.bp)
    app.register_blueprint(ingest.bp)
    app.register_blueprint(incoming_webhook.bp)
    app.register_blueprint(sources.airbyte_bp)
    app.register_blueprint(sources.fivetran_bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(read_api.bp)
    register_error_handlers(app)
    if owns_store:
        app.extensions[WORKERS_KEY] = BackgroundWorkers(store, config, clock=clock)
    return app


class AnyPathConverter(PathConverter):
    """``<path:...>`` that takes any text, a leading slash and empty segments included.

    werkzeug's own refuses a value starting with ``/``; a connection named
    ``/lead`` (sent as ``%2Flead``, which the server decodes to ``/`` before
    routing) could then never be addressed.
    """

    regex = ".+?"
    part_isolating = False


def route_every_path_as_sent(app: Flask) -> None:
    """Route each path as it came: never a redirect to another one, every stored name addressable.

    werkzeug merges repeated slashes by redirecting (308, an HTML body) to the
    merged path: a client that follows it (python-requests does) would act on
    another resource, e.g. ``DELETE /api/v1/connections/%2Flead`` on ``lead``.
    Unmerged, such a path is routed as it is, or is a JSON 404.
    """
    app.url_map.merge_slashes = False
    app.url_map.redirect_defaults = False
    app.url_map.converters["path"] = AnyPathConverter


def runtime_collectors() -> tuple[Collector, ...]:
    """The serving process's own metrics every Prometheus user expects of an exporter.

    ``process_*`` (CPU, memory, open files, start time), ``python_info`` and
    ``python_gc_*``, as prometheus_client's default registry has them; each
    worker process reports its own.
    """
    own = CollectorRegistry()  # not the library's global one, which nothing here reads
    return (ProcessCollector(registry=own), PlatformCollector(registry=own), GCCollector(registry=own))


def background_workers(app: Flask) -> BackgroundWorkers | None:
    """The app's background workers, not started; None when the app was handed its store."""
    workers: BackgroundWorkers | None = app.extensions.get(WORKERS_KEY)
    return workers
