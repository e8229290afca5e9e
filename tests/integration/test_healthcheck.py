"""``calabi-exporter healthcheck`` asks the address the configuration gives, as a container's health check."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.exporter_process import ExporterProcess
from tests.support.processes import environment_without_calabi, free_port


def healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "calabi_exporter", "healthcheck", *args],
        env={**environment_without_calabi(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def not_ready_server() -> Iterator[int]:
    """A server whose ``/readyz`` answers 503, as the exporter's does when its store cannot be written."""

    class NotReady(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"status": "not ready", "reason": "store is not writable"}'
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotReady)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_a_ready_exporter_on_a_non_default_port_is_healthy_when_listening_on_every_interface(
    exporter_process: Callable[..., ExporterProcess],
) -> None:
    exporter = exporter_process()

    # The container's setting: every interface on the exporter's port; the check asks loopback.
    result = healthcheck(env={"CALABI_LISTEN": f"0.0.0.0:{exporter.port}"})

    assert (result.returncode, result.stderr) == (0, "")


def test_the_check_reads_the_listen_address_from_the_configuration_file(
    exporter_process: Callable[..., ExporterProcess], tmp_path: Path
) -> None:
    exporter = exporter_process()
    config = tmp_path / "config.yml"
    config.write_text(f'listen: "127.0.0.1:{exporter.port}"\n')

    assert healthcheck("--config", str(config)).returncode == 0
    assert healthcheck(env={"CALABI_CONFIG": str(config)}).returncode == 0


def test_nothing_listening_on_the_configured_port_is_unhealthy_and_says_where_it_asked() -> None:
    port = free_port()

    result = healthcheck("--listen", f"127.0.0.1:{port}")

    assert result.returncode == 1
    assert result.stderr.startswith(f"calabi-exporter: not ready: http://127.0.0.1:{port}/readyz: ")
    assert result.stderr.count("\n") == 1


def test_a_not_ready_answer_is_unhealthy_with_its_status_and_reason(not_ready_server: int) -> None:
    result = healthcheck(env={"CALABI_LISTEN": f"127.0.0.1:{not_ready_server}"})

    assert result.returncode == 1
    assert result.stderr == (
        f"calabi-exporter: not ready: http://127.0.0.1:{not_ready_server}/readyz: HTTP 503"
        ' {"status": "not ready", "reason": "store is not writable"}\n'
    )


def test_a_bad_listen_setting_is_a_config_error() -> None:
    result = healthcheck(env={"CALABI_LISTEN": "nine-one-eight-eight"})

    assert result.returncode == 2
    assert result.stderr.startswith("calabi-exporter: config error: listen")
