"""The Flask application factory."""

from __future__ import annotations

from flask import Flask

from ..collector import SyncJobCollector, Thresholds
from ..config import Config
from ..logship import LogShipper
from ..retention import Purger
from ..s3export import S3Exporter
from ..scrape import ScrapeRenderer
from ..store import SeriesLimits, SQLiteStore, Store
from ..timeutil import Clock, system_clock
from ..webhook_delivery import WebhookDeliverer, routes_from
from . import ingest, ops, read_api, webhooks
from .errors import register_error_handlers
from .services import EXTENSION_KEY, PURGER_KEY, S3_EXPORTER_KEY, SHIPPER_KEY, WEBHOOKS_KEY, Services


def create_app(
    config: Config,
    *,
    store: Store | None = None,
    clock: Clock = system_clock,
    ship_logs: bool | None = None,
    server_worker: bool = False,
) -> Flask:
    """Build the exporter's WSGI app.

    ``store`` defaults to SQLite in ``config.data_dir``; tests hand in their own
    store and clock. With an ``otlp_logs_endpoint`` the app starts the log
    shipper thread (``ship_logs`` overrides; by default only an app that owns
    its store ships). Under gunicorn every worker builds its app, and the
    shipper's lock lets one of them ship at a time. ``server_worker``: the app
    is the whole of a server worker process (``serve``), which may freeze what
    its start-up made out of the cyclic garbage collector's way.
    """
    app = Flask("calabi_exporter", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    shipping = bool(config.otlp_logs_endpoint)
    owns_store = store is None
    if ship_logs is None:
        ship_logs = shipping and store is None
    if store is None:
        store = SQLiteStore(
            config.data_path,
            clock=clock,
            synchronous=config.sqlite_synchronous,
            outbox=shipping,
            webhook_routes=routes_from(config),
            s3_export=config.s3_export_enabled,
            limits=SeriesLimits(config.limits_max_connections, config.limits_max_streams_per_connection),
        )
    collector = SyncJobCollector(
        store.metrics_snapshot,
        Thresholds.from_config(config),
        clock=clock,
        s3_export=config.s3_export_enabled,
        webhook_endpoints=[e.name for e in config.webhooks],
        streams_exposed=config.streams_exposed,
    )
    scrapes = ScrapeRenderer(
        collector, store.connection_versions, store.metrics_snapshot, freeze_first_render=server_worker
    )
    app.extensions[EXTENSION_KEY] = Services(config=config, store=store, clock=clock, scrapes=scrapes)
    app.register_blueprint(ingest.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(read_api.bp)
    register_error_handlers(app)
    if owns_store:
        purger = Purger(store, config, clock=clock)
        purger.start()
        app.extensions[PURGER_KEY] = purger
    if ship_logs and shipping:
        shipper = LogShipper(store, config, clock=clock)
        shipper.start()
        app.extensions[SHIPPER_KEY] = shipper
    if owns_store and config.s3_export_enabled:
        exporter = S3Exporter(store, config, clock=clock)
        exporter.start()
        app.extensions[S3_EXPORTER_KEY] = exporter
    if owns_store and config.webhooks:
        deliverer = WebhookDeliverer(store, config, clock=clock)
        deliverer.start()
        app.extensions[WEBHOOKS_KEY] = deliverer
    return app
