"""Request bodies taken in within a budget of bytes per worker process.

A body is read whole, parsed and turned into records before it is stored: a
10 MiB batch holds four to six times its size in memory until it is answered
(``bench/bench_body_memory.py``). Threads alone do not bound that, so every
request is admitted against ``max_body_bytes_in_flight``: it costs its
Content-Length, or ``max_body_bytes`` when it is chunked (its size is not
known before it is read). A request that does not fit waits up to
:data:`~.body_budget.WAIT_SECONDS` for others to finish, then gets 503 with ``Retry-After``
before any of its body is read. A body larger than the whole budget is
admitted alone. Requests without a body cost nothing and always pass.
"""

from __future__ import annotations

from typing import Final

from flask import Flask, Request, Response, current_app, g, request

from .errors import error_response
from .services import services

#: What a refused client is told to wait: about the time one large batch takes.
RETRY_AFTER_SECONDS: Final = 2
_ADMITTED: Final = "calabi_body_bytes_admitted"


def body_cost(incoming: Request, limit: int) -> int:
    """The bytes a request's body may take: its Content-Length, or ``limit`` when it is chunked.

    A Content-Length over ``limit`` costs nothing: Flask refuses it with 413
    before reading a byte.

    >>> from werkzeug.test import EnvironBuilder
    >>> body_cost(Request(EnvironBuilder(method="POST", data=b"x" * 100).get_environ()), 1024)
    100
    >>> chunked = EnvironBuilder(method="POST", headers={"Transfer-Encoding": "chunked"}).get_environ()
    >>> body_cost(Request(chunked), 1024), body_cost(Request(EnvironBuilder(method="GET").get_environ()), 1024)
    (1024, 0)
    """
    length = incoming.content_length
    if length is not None:
        return length if length <= limit else 0
    if "chunked" in incoming.headers.get("Transfer-Encoding", "").lower():
        return limit
    return 0


def admit() -> tuple[Response, int] | None:
    """Flask's ``before_request``: take the request's body bytes from the budget, or answer 503."""
    cost = body_cost(request, current_app.config["MAX_CONTENT_LENGTH"])
    if cost == 0:
        return None
    taken = services().bodies.acquire(cost)
    if taken is None:
        response, status = error_response(
            503, "too many request bodies are being processed at once; retry shortly", "body"
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response, status
    setattr(g, _ADMITTED, taken)
    return None


def release(_error: BaseException | None) -> None:
    """Flask's ``teardown_request``: give the request's bytes back, whatever became of it."""
    taken: int | None = g.pop(_ADMITTED, None)
    if taken is not None:
        services().bodies.release(taken)


def register_admission(app: Flask) -> None:
    """Admit every request of ``app`` against the budget in its services."""
    app.before_request(admit)
    app.teardown_request(release)
