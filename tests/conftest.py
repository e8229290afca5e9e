"""Shared fixtures: an injected clock, a store on a temp dir, the app and its client,
and real servers (the exporter as a subprocess, Debian's Prometheus, Loki) on free loopback ports."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest
from calabi_exporter.config import Config
from calabi_exporter.store import Store
from calabi_exporter.store.records import METRICS_ROLE
from calabi_exporter.web import create_app
from flask import Flask
from flask.testing import FlaskClient

from tests.support.clock import FakeClock
from tests.support.exporter_process import ExporterProcess
from tests.support.loki_server import MAPPINGS, Loki, loki_binary, start_loki
from tests.support.paths import TESTS
from tests.support.postgres_server import PostgresServer, postgres_bin
from tests.support.processes import free_port, require_binary, start_server, stop_server
from tests.support.prometheus_server import Prometheus
from tests.support.real_components import missing
from tests.support.samples import Samples, parse_samples
from tests.support.tiers import TIERS, Tier

if TYPE_CHECKING:
    from tests.support.s3_server import MotoServer

pytest_plugins = ("tests.support.containers",)  # the engine and the images, made once per run


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(data_dir=str(tmp_path / "data"))


BACKENDS = ("sqlite", "postgres")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "every_backend: run the test on SQLite and on PostgreSQL")
    for tier in TIERS.values():
        config.addinivalue_line("markers", f"{tier.name}: tests/{tier.name}/, {tier.meaning}")


def tier_of(item: pytest.Item) -> Tier:
    """The tier of a test: the folder under ``tests/`` it lives in."""
    relative = item.path.relative_to(TESTS)
    if len(relative.parts) < 2 or relative.parts[0] not in TIERS:
        raise pytest.UsageError(f"{item.nodeid}: a test lives in one of tests/{{{','.join(TIERS)}}}/")
    return TIERS[relative.parts[0]]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="the day-to-day subset: every tier but integration, without the tests marked slow (CI runs all)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier, stop at a test that uses what its tier may not, and keep ``--fast``'s."""
    for item in items:
        tier = tier_of(item)
        item.add_marker(tier.name)
        used = tier.forbidden.intersection(getattr(item, "fixturenames", ()))
        if used:
            raise pytest.UsageError(
                f"{item.nodeid}: a {tier.name} test ({tier.meaning}) may not use {', '.join(sorted(used))}"
            )
    order = list(TIERS)
    items.sort(key=lambda item: order.index(tier_of(item).name))  # stable: the cheapest tier fails first
    if config.getoption("fast"):
        slow = [item for item in items if tier_of(item).processes or item.get_closest_marker("slow")]
        config.hook.pytest_deselected(items=slow)
        left_out = set(map(id, slow))
        items[:] = [item for item in items if id(item) not in left_out]


@pytest.fixture(autouse=True)
def root_log_filters_restored() -> Iterator[None]:
    """A command run in the test's process adds its secret filter to every root handler, pytest's own
    (which live for the whole session) among them: each handler gets its filters back after the test,
    so a later test's log lines are not masked by an earlier test's configuration."""
    handlers = logging.getLogger().handlers
    before = {handler: handler.filters[:] for handler in handlers}
    yield
    for handler, filters in before.items():
        handler.filters[:] = filters


@pytest.fixture(autouse=True)
def processes_only_in_integration(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside ``integration``, starting a process fails the test: the fast tiers stay fast."""
    tier = tier_of(request.node)
    if tier.processes:
        return
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("backend") == "postgres":
        request.getfixturevalue("postgres")  # the session's one server, started before the door closes

    def refuse(self: subprocess.Popen[bytes], args: Any, *rest: Any, **options: Any) -> None:
        raise AssertionError(f"a {tier.name} test starts no process ({args!r}): move it to tests/integration/")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``every_backend`` that use a store run once per backend."""
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("every_backend"):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The store's backend: SQLite, unless the test is marked ``every_backend``."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the session (Debian's server, run as ``postgres`` under root)."""
    bin_dir, why = postgres_bin()
    if bin_dir is None:
        missing(why)
    server = PostgresServer(bin_dir, free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_store(backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., Store]]:
    """``make_store(data_dir, **options)``: a store of the test's backend; the same ``data_dir`` reopens it.

    On PostgreSQL each ``data_dir`` is a database of its own on the session's
    server, and the store takes the metrics role (as the only replica would).
    """
    stores: list[Store] = []
    databases: dict[Path, str] = {}

    def make_store(data_dir: Path, *, synchronous: str = "full", **options: Any) -> Store:
        if backend == "postgres":
            server: PostgresServer = request.getfixturevalue("postgres")
            url = databases.get(Path(data_dir)) or databases.setdefault(Path(data_dir), server.new_store_database())
            store = Store.postgres(url, **options)
            assert store.role_lock(METRICS_ROLE).acquire()
        else:
            store = Store.sqlite(data_dir, synchronous=synchronous, **options)
        stores.append(store)
        return store

    make_store.database_url = lambda data_dir: (
        databases.get(Path(data_dir))
        or databases.setdefault(  # type: ignore[attr-defined]
            Path(data_dir), request.getfixturevalue("postgres").new_store_database()
        )
    )
    yield make_store
    for store in stores:
        store.close()


@pytest.fixture
def store(config: Config, clock: FakeClock, make_store: Callable[..., Store]) -> Store:
    return make_store(config.data_path, clock=clock)


@pytest.fixture
def app(config: Config, store: Store, clock: FakeClock) -> Flask:
    return create_app(config, store=store, clock=clock)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def open_app(
    tmp_path: Path, clock: FakeClock, backend: str, make_store: Callable[..., Store]
) -> Iterator[Callable[..., Flask]]:
    """Apps over one data dir, each owning its store as ``serve`` does (settings: Config fields); closed after."""
    apps: list[Flask] = []

    def open_app(**settings: Any) -> Flask:
        if backend == "postgres":
            settings.setdefault("database_url", make_store.database_url(tmp_path / "data"))  # type: ignore[attr-defined]
        app = create_app(Config(data_dir=str(tmp_path / "data"), **settings), clock=clock)
        if backend == "postgres":  # the only replica: it shows the store's metrics
            assert app.extensions["calabi_exporter"].store.role_lock(METRICS_ROLE).acquire()
        apps.append(app)
        return app

    yield open_app
    for app in apps:
        app.extensions["calabi_exporter"].store.close()


@pytest.fixture
def scrape(client: FlaskClient) -> Callable[[], Samples]:
    def scrape() -> Samples:
        response = client.get("/metrics")
        assert response.status_code == 200
        return parse_samples(response.get_data(as_text=True))

    return scrape


@pytest.fixture
def exporter_process(tmp_path: Path) -> Iterator[Callable[..., ExporterProcess]]:
    started: list[ExporterProcess] = []

    def start(
        workers: int = 1,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        log_level: str = "warning",
        log_path: Path | None = None,
    ) -> ExporterProcess:
        process = ExporterProcess(
            data_dir or tmp_path / "exporter-data",
            workers=workers,
            extra_env=env,
            log_level=log_level,
            log_path=log_path,
        ).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    started: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []

    def start(
        target: str | Sequence[str],
        *,
        rule_files: Sequence[Path] = (),
        alertmanager: str | None = None,
        credentials_file: Path | None = None,
    ) -> Prometheus:
        binary = require_binary("prometheus")
        port = free_port()
        config = tmp_path / "prometheus.yml"
        text = (
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: calabi-exporter\n"
            f"    static_configs:\n      - targets: {[target] if isinstance(target, str) else list(target)}\n"
        )
        if credentials_file is not None:
            text += f"    authorization:\n      credentials_file: '{credentials_file}'\n"
        if rule_files:
            text += "rule_files:\n" + "".join(f"  - '{path}'\n" for path in rule_files)
        if alertmanager:
            text += f"alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{alertmanager}']\n"
        config.write_text(text)
        url = f"http://127.0.0.1:{port}"
        process, log = start_server(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            ready_url=url + "/-/ready",
            log_path=tmp_path / "prometheus.log",
            what="Prometheus",
        )
        logs.append(log)
        started.append(process)
        return Prometheus(process, url)

    yield start
    for process in started:
        stop_server(process)
    for log in logs:
        log.close()


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    # The standard AWS chain: credentials from the environment, no shared files of this machine.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    from tests.support.s3_server import MotoServer

    server = MotoServer(tmp_path / "moto.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def lokis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Loki]]:
    """Two real Lokis for the session: the project's ``otlp_config`` and Loki's default OTLP mapping.

    Started together (each takes about 15 s to be ready). Tests keep apart by
    ``service_name``: only the dashboard query test ships as ``calabi-connect``.
    """
    binary, why = loki_binary()
    if binary is None:
        missing(why)
    root = tmp_path_factory.mktemp("loki")
    ports = {mapping: (free_port(), free_port()) for mapping in MAPPINGS}
    with ThreadPoolExecutor(len(MAPPINGS)) as pool:
        futures = {m: pool.submit(start_loki, binary, root / m, mapping=m, ports=ports[m]) for m in MAPPINGS}
        started = {m: f.result() for m, f in futures.items()}
    yield started
    for loki in started.values():
        loki.stop()


@pytest.fixture(scope="session")
def loki(lokis: dict[str, Loki]) -> Loki:
    """The real Loki configured as the project ships it (``loki/loki-config.yaml``)."""
    return lokis["project"]
