"""The vendor's side of a poller test: a scripted HTTP API behind Prism (:mod:`.prism`).

Each route answers from what the test put there (pages of jobs or connections);
``fail_next`` makes the next answers of a route fail (429 with ``Retry-After``,
503, …) before it answers again. Every request is kept, so a test can say what
the poller asked for. Whether an answer is one the vendor could give is decided
by Prism against the vendor's OpenAPI document, not here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from .capture_servers import reply, run_in_thread, shut


@dataclass(frozen=True)
class Asked:
    """One request the API got."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[Asked], Answer]


class ScriptedApi:
    """An HTTP API on loopback answering each ``(method, path)`` from its route."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.asked: list[Asked] = []
        self._faults: dict[tuple[str, str], list[Answer]] = {}
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.port = 0

    def fail_next(self, method: str, path: str, *answers: Answer) -> None:
        """The next requests of the route get these answers, in order, before its own."""
        with self._lock:
            self._faults.setdefault((method, path), []).extend(answers)

    def reset(self) -> None:
        with self._lock:
            self.routes.clear()
            self.asked.clear()
            self._faults.clear()

    def requests_to(self, method: str, path: str) -> list[Asked]:
        with self._lock:
            return [a for a in self.asked if (a.method, a.path) == (method, path)]

    def _answer(self, asked: Asked) -> Answer:
        key = (asked.method, asked.path)
        with self._lock:
            self.asked.append(asked)
            faults = self._faults.get(key)
            if faults:
                return faults.pop(0)
            route = self.routes.get(key)
        if route is None:
            return Answer(404, {"message": f"no route {asked.method} {asked.path}"})
        return route(asked)

    def start(self) -> Self:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                url = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                query = {key: values[-1] for key, values in parse_qs(url.query).items()}
                headers = {name.lower(): value for name, value in self.headers.items()}
                answer = owner._answer(Asked(self.command, url.path, query, headers, body))
                payload = b"" if answer.body is None else json.dumps(answer.body).encode()
                reply(self, answer.status, {"Content-Type": "application/json", **answer.headers}, payload)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = run_in_thread(self.server)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        shut(self.server)
        self.server = None
