"""Shared fixtures: an injected clock, a store on a temp dir, the app and its client,
and real servers (the exporter as a subprocess, Debian's Prometheus, Loki) on free loopback ports."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import psycopg
import pytest
import requests
from calabi_exporter.config import Config
from calabi_exporter.store import Store
from calabi_exporter.store.records import METRICS_ROLE
from calabi_exporter.web import create_app
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from .loki_server import MAPPINGS, Loki, loki_binary, start_loki
from .postgres_server import PostgresServer, postgres_bin
from .processes import environment_without_calabi, free_port
from .real_components import missing

if TYPE_CHECKING:
    from .s3_server import MotoServer

pytest_plugins = ("tests.containers",)  # the engine and the images, made once per run

T0 = 1_775_462_400.0  # 2026-04-06T08:00:00Z
RUNTIME_PREFIXES = ("process_", "python_")  # the serving process's own families, in every scrape


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(data_dir=str(tmp_path / "data"))


BACKENDS = ("sqlite", "postgres")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "every_backend: run the test on SQLite and on PostgreSQL")


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
            url = databases.setdefault(Path(data_dir), server.new_database())
            store = Store.postgres(url, **options)
            assert store.role_lock(METRICS_ROLE).acquire()
        else:
            store = Store.sqlite(data_dir, synchronous=synchronous, **options)
        stores.append(store)
        return store

    make_store.database_url = lambda data_dir: databases.setdefault(  # type: ignore[attr-defined]
        Path(data_dir), request.getfixturevalue("postgres").new_database()
    )
    yield make_store
    for store in stores:
        store.close()


@contextmanager
def writes_refused(store: Store) -> Iterator[None]:
    """The store's database refuses every write meanwhile (reads still work)."""
    database: Any = store.database
    if database.dialect.name == "sqlite":
        db = database.connection()  # this thread's: the test client serves requests on it
        db.execute("PRAGMA query_only = ON")
        try:
            yield
        finally:
            db.execute("PRAGMA query_only = OFF")
        return
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'writes refused by the test'; END $$"
        )
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT OR UPDATE OR DELETE ON meta EXECUTE FUNCTION refuse()")
        try:
            yield
        finally:
            conn.execute("DROP TRIGGER refuse ON meta")
            conn.execute("DROP FUNCTION refuse()")


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


class Samples(dict[tuple[str, frozenset[tuple[str, str]]], float]):
    """Scraped samples keyed by name and labels, for exact assertions."""

    def get_value(self, name: str, **labels: str) -> float | None:
        return self.get((name, frozenset(labels.items())))

    def value(self, name: str, **labels: str) -> float:
        found = self.get_value(name, **labels)
        assert found is not None, f"no sample {name}{labels}"
        return found

    def family(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {labels: v for (sample, labels), v in self.items() if sample == name}

    def store_samples(self) -> Samples:
        """The samples made from the store, without the serving process's own (``process_*``, ``python_*``)."""
        return Samples({key: v for key, v in self.items() if not key[0].startswith(RUNTIME_PREFIXES)})


def parse_samples(text: str) -> Samples:
    samples = Samples()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


@pytest.fixture
def scrape(client: FlaskClient) -> Callable[[], Samples]:
    def scrape() -> Samples:
        response = client.get("/metrics")
        assert response.status_code == 200
        return parse_samples(response.get_data(as_text=True))

    return scrape


def job(
    job_id: str, status: str = "succeeded", connection: str = "Salesforce → Snowflake", **fields: Any
) -> dict[str, Any]:
    """A job record with just enough to be valid."""
    return {"job_id": job_id, "connection_name": connection, "status": status, **fields}


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class ExporterProcess:
    """``calabi-exporter serve`` as a real subprocess."""

    data_dir: Path
    workers: int = 1
    extra_env: dict[str, str] | None = None
    log_level: str = "warning"
    log_path: Path | None = None  # the process's output (access log on stdout, the rest on stderr)
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ExporterProcess:
        self.port = free_port()
        env = environment_without_calabi()
        # The data sets are dated 2026-04-06: keep them whatever today's date is.
        env["CALABI_RETENTION__DAYS"] = "36500"
        env.update(self.extra_env or {})
        self.log = None if self.log_path is None else self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "calabi_exporter",
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--data-dir",
                str(self.data_dir),
                "--workers",
                str(self.workers),
                "--log-level",
                self.log_level,
            ],
            env=env,
            stdout=self.log,
            stderr=self.log,
        )

        def ready() -> bool:
            assert self.process is not None and self.process.poll() is None, "exporter exited"
            try:
                return requests.get(self.url + "/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_until(ready, timeout=30, what="the exporter to be ready")
        except AssertionError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()
            self.log = None

    def scrape(self) -> Samples:
        response = requests.get(self.url + "/metrics", timeout=10)
        response.raise_for_status()
        return parse_samples(response.text)


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


def require_binary(name: str) -> str:
    """Path of a Debian-packaged binary the suite needs; the test command installs them."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run the README's test command, which installs it")
    return path


def start_server(
    argv: list[str], *, ready_url: str, log_path: Path, what: str, timeout: float = 30
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start a server binary with its stderr in ``log_path`` and wait until ``ready_url`` answers 200."""
    log = log_path.open("wb")
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)

    def ready() -> bool:
        assert process.poll() is None, f"{what} exited: " + log_path.read_text()
        try:
            return requests.get(ready_url, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, timeout=timeout, what=f"{what} to be ready")
    return process, log


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Prometheus:
    """Debian's Prometheus, scraping its targets every second."""

    process: subprocess.Popen[bytes]
    url: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = requests.get(self.url + "/api/v1/query", params={"query": promql}, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, promql: str) -> float | None:
        """The single value of ``promql``, or None when it returns nothing."""
        result = self.query(promql)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])


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
    from .s3_server import MotoServer  # it imports this module's helpers

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
