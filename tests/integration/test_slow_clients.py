"""Clients that send their bodies slowly cannot starve health checks and scrapes."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import requests

from tests.support.exporter_process import ExporterProcess

SLOW_CLIENTS = 100
DECLARED_BODY = 100_000  # bytes each slow client announces and never finishes


@contextmanager
def trickling_clients(port: int, count: int) -> Iterator[None]:
    """``count`` POSTs whose headers arrive at once and whose body then comes at one byte a second.

    A thread owned by the context sends the bytes and stops when the block
    ends; the sockets are closed before the body is complete.
    """
    stop = threading.Event()
    with ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
            sock.sendall(
                b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {DECLARED_BODY}\r\n\r\n".encode()
            )
            sockets.append(sock)

        def trickle() -> None:
            while not stop.wait(1.0):
                for sock in sockets:
                    sock.sendall(b" ")

        thread = threading.Thread(target=trickle, name="trickle")
        thread.start()
        try:
            stop.wait(2.0)  # every client is now past its headers, in the body
            yield
        finally:
            stop.set()
            thread.join()


def test_a_hundred_clients_at_one_byte_a_second_leave_healthz_and_metrics_answering(
    exporter_process: Callable[..., ExporterProcess],
) -> None:
    exporter = exporter_process(workers=2)

    # The slow bodies never end while the answers are asked for: a request left waiting for a thread they
    # hold would wait for ever; the bound only ends the test, how fast the answers come is bench/'s business.
    with trickling_clients(exporter.port, SLOW_CLIENTS):
        answers = [
            requests.get(exporter.url + path, timeout=30).status_code
            for _ in range(3)
            for path in ("/healthz", "/metrics", "/readyz")
        ]

    assert answers == [200] * 9
    stored = requests.get(exporter.url + "/api/v1/jobs", timeout=5).json()
    assert stored["jobs"] == []  # none of the unfinished bodies was taken as a request
