"""One HTTP exchange bounded in time and in what is read back: the log shipper, webhook delivery, the pollers.

A receiver can misbehave in ways that ``requests`` alone does not bound: its
timeouts are per socket read, so an answer trickled a byte a second holds the
caller for as long as the receiver likes, and ``Response.content`` reads a body
whole, so a 200 MiB error page costs 200 MiB of memory. Here the time limit is
a total deadline for the whole exchange (connect, send, headers, body): a
watchdog shuts the connection's socket down when it passes, which wakes any
read or write blocked on it. The body is streamed and kept up to ``max_body``
bytes; the rest is never read (the connection is closed instead of reused).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import requests
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

#: Bytes of an answer kept: enough for any receiver's explanation (Loki's Status, a JSON error).
MAX_BODY: Final = 65_536
_CHUNK: Final = 16_384


class DeadlineExceeded(requests.Timeout):
    """The whole exchange took longer than its deadline."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A receiver's answer: its status, headers, and at most ``MAX_BODY`` bytes of its body."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    truncated: bool = False  # the body was longer than what was kept

    def text(self) -> str:
        """The kept body as text (invalid UTF-8 replaced), without surrounding white space."""
        return self.body.decode("utf-8", "replace").strip()


class _Watch:
    """The connection of the request running on this thread, shut down when its deadline passes."""

    def __init__(self) -> None:
        self.connection: HTTPConnection | None = None
        self.fired = False
        self._lock = threading.Lock()

    def watch(self, connection: HTTPConnection) -> None:
        """``connection`` carries the exchange now (a redirect or a retry may bring another)."""
        with self._lock:
            if self.fired:
                raise DeadlineExceeded("the deadline passed before the request was sent")
            self.connection = connection

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            sock = self.connection.sock if self.connection is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):  # already closed
                    sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """The exchange is over: its connection may go back to the pool, never to be shut down by this watch."""
        with self._lock:
            self.connection = None


_current = threading.local()


class _WatchedConnection(HTTPConnection):
    """Makes itself the connection the current watch shuts down (it may connect later)."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        watch: _Watch | None = getattr(_current, "watch", None)
        if watch is not None:
            watch.watch(self)
        super().request(*args, **kwargs)


class _WatchedTLSConnection(_WatchedConnection, HTTPSConnection):
    pass


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedTLSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedTLSConnection


def _watched(manager: PoolManager) -> PoolManager:
    manager.pool_classes_by_scheme = {"http": _WatchedPool, "https": _WatchedTLSPool}
    return manager


class _DeadlineAdapter(HTTPAdapter):
    """Connections the watchdog can shut down, direct or through a proxy."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watched(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager: PoolManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        return _watched(manager)


def bound(session: requests.Session) -> None:
    """Make ``session``'s HTTP and HTTPS connections ones that :func:`post` can stop at a deadline."""
    adapter = _DeadlineAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)


def bounded_session() -> requests.Session:
    """A new session whose requests :func:`post` can stop at a deadline."""
    session = requests.Session()
    bound(session)
    return session


def post(
    session: requests.Session,
    url: str,
    *,
    data: bytes,
    headers: Mapping[str, str],
    timeout: float,
    max_body: int = MAX_BODY,
) -> Answer:
    """POST ``data`` and read the answer, all within ``timeout`` seconds; at most ``max_body`` bytes are read.

    Redirects are not followed. Raises :class:`DeadlineExceeded` when the deadline
    passes, another ``requests.RequestException`` when the exchange fails. The
    session should come from :func:`bounded_session` (or :func:`bound`); with
    another, each read is still limited to ``timeout``.
    """
    return exchange(session, "POST", url, data=data, headers=headers, timeout=timeout, max_body=max_body)


def exchange(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    timeout: float,
    data: bytes | None = None,
    params: Mapping[str, str] | None = None,
    max_body: int = MAX_BODY,
) -> Answer:
    """One request of any method, bounded as :func:`post` is (the pollers' GETs of a vendor's API)."""
    watch = _Watch()
    timer = threading.Timer(timeout, watch.fire)
    timer.daemon = True
    _current.watch = watch
    timer.start()
    try:
        return _exchange(
            session, method, url, data=data, params=params, headers=headers, timeout=timeout, max_body=max_body
        )
    except requests.RequestException as error:
        if watch.fired:
            raise DeadlineExceeded(f"no whole answer within {timeout:g} s") from error
        raise
    except OSError as error:  # a read woken by the watchdog may surface as a bare socket error
        if watch.fired:
            raise DeadlineExceeded(f"no whole answer within {timeout:g} s") from error
        raise requests.ConnectionError(str(error)) from error
    finally:
        watch.release()
        timer.cancel()
        _current.watch = None


def _exchange(
    session: requests.Session,
    method: str,
    url: str,
    *,
    data: bytes | None,
    params: Mapping[str, str] | None,
    headers: Mapping[str, str],
    timeout: float,
    max_body: int,
) -> Answer:
    started = time.monotonic()
    with session.request(
        method,
        url,
        data=data,
        params=params,
        headers=dict(headers),
        timeout=timeout,
        stream=True,
        allow_redirects=False,
    ) as response:
        kept = bytearray()
        truncated = False
        for chunk in response.iter_content(_CHUNK):
            room = max_body - len(kept)
            kept += chunk[:room]
            if len(chunk) > room:
                truncated = True
                break
            if time.monotonic() - started > timeout:
                raise DeadlineExceeded(f"no whole answer within {timeout:g} s")
        return Answer(response.status_code, response.headers, bytes(kept), truncated)
