"""HTTP sessions, one per thread: a ``requests.Session`` is not safe to share between threads.

Webhook delivery sends from one thread per endpoint and the MCP server runs tool
calls on worker threads; each thread gets its own session (and so its own
connection pool), and the owner closes them all at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import requests


class ThreadSessions:
    """Hands each thread its own session, made by ``configure``; :meth:`close` closes every one."""

    def __init__(self, configure: Callable[[requests.Session], None] = lambda _session: None) -> None:
        self._configure = configure
        self._local = threading.local()
        self._lock = threading.Lock()
        self._made: list[requests.Session] = []

    def get(self) -> requests.Session:
        """This thread's session, made on first use."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._configure(session)
            self._local.session = session
            with self._lock:
                self._made.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            made, self._made = self._made, []
        for session in made:
            session.close()
