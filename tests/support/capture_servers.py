"""Local stand-ins for Slack, PagerDuty, a custom webhook (one HTTP server) and an SMTP server."""

from __future__ import annotations

import json
import socketserver
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self


def run_in_thread(server: socketserver.BaseServer) -> int:
    """Serve ``server`` from a daemon thread; returns its port."""
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    port: int = server.server_address[1]  # type: ignore[index]
    return port


def shut(server: socketserver.BaseServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()


class LoopbackHttp:
    """An HTTP server on loopback whose POSTs go to :meth:`on_post`, served from a daemon thread.

    ``start`` binds ``port`` (0: a free one; after ``stop``, the same one again, as an
    endpoint that goes down and comes back).
    """

    port: int
    server: ThreadingHTTPServer | None
    PROTOCOL: ClassVar[str] = "HTTP/1.0"

    def on_post(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        """Answer one POST whose body is ``body``."""
        raise NotImplementedError

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = owner.PROTOCOL

            def do_POST(self) -> None:
                owner.on_post(self, self.rfile.read(int(self.headers.get("Content-Length", "0"))))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = run_in_thread(self.server)

    def stop(self) -> None:
        shut(self.server)
        self.server = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def reply(request: BaseHTTPRequestHandler, status: int, headers: dict[str, str], payload: bytes = b"") -> None:
    """Send an answer: ``status``, ``headers``, then ``payload`` with its Content-Length."""
    request.send_response(status)
    for name, value in headers.items():
        request.send_header(name, value)
    request.send_header("Content-Length", str(len(payload)))
    request.end_headers()
    request.wfile.write(payload)


@dataclass
class HttpCapture(LoopbackHttp):
    """Records every POST as (path, JSON body); answers 200 (PagerDuty's 202)."""

    port: int = 0
    posts: list[tuple[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str) -> list[Any]:
        with self.lock:
            return [body for p, body in self.posts if p == path]

    def on_post(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        with self.lock:
            self.posts.append((request.path, parsed))
        status = 202 if "pagerduty" in request.path else 200
        reply(request, status, {"Content-Type": "application/json"}, b'{"status":"success"}')


@dataclass
class SmtpCapture:
    """A minimal SMTP server (no TLS, no AUTH) that keeps every message it receives."""

    port: int = 0
    messages: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> None:
        capture = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self) -> None:
                self.reply("220 capture ESMTP")
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    command = line.decode("utf-8", "replace").strip().upper()
                    if command.startswith(("EHLO", "HELO")):
                        self.wfile.write(b"250-capture\r\n250 8BITMIME\r\n")
                    elif command.startswith(("MAIL", "RCPT", "RSET", "NOOP")):
                        self.reply("250 OK")
                    elif command == "DATA":
                        self.reply("354 end with .")
                        data = b""
                        while True:
                            chunk = self.rfile.readline()
                            if not chunk or chunk in (b".\r\n", b".\n"):
                                break
                            data += chunk[1:] if chunk.startswith(b"..") else chunk
                        with capture.lock:
                            capture.messages.append(message_from_bytes(data, policy=policy.default))
                        self.reply("250 queued")
                    elif command == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("502 not implemented")

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = run_in_thread(self.server)

    def texts(self) -> list[str]:
        """Subject and plain-text body of every message."""
        with self.lock:
            out = []
            for message in self.messages:
                part = message.get_body(preferencelist=("plain", "html"))
                out.append(f"{message['Subject']}\n{part.get_content() if part is not None else ''}")
            return out

    def stop(self) -> None:
        shut(self.server)


@dataclass
class WebhookReceiver(LoopbackHttp):
    """A webhook endpoint on loopback: keeps each request's headers and raw body.

    ``answers`` is a queue of status codes to reply with (then 200), each alone or with
    headers as ``(429, {"Retry-After": "120"})``; ``hold``,
    while cleared, keeps each request waiting after it was recorded. ``stop``
    and ``start`` again reuse the port, as an endpoint that goes down and
    comes back.
    """

    port: int = 0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answers: list[int | tuple[int, dict[str, str]]] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self.hold.set()

    def __exit__(self, *_exc: object) -> None:
        self.hold.set()  # a request still held gets its answer, so the server can close
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/calabi-events"

    def bodies(self) -> list[Any]:
        with self.lock:
            return [json.loads(body) for _, body in self.requests]

    def on_post(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        with self.lock:
            self.requests.append((dict(request.headers.items()), body))
            answer = self.answers.pop(0) if self.answers else 200
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        self.hold.wait(timeout=30)
        reply(request, status, headers)


@dataclass
class MisbehavingServer(LoopbackHttp):
    """An HTTP receiver on loopback that answers badly, for fault injection.

    ``mode`` is ``huge`` (a status line, then a body of ``size`` bytes written as fast
    as the client takes it), ``trickle`` (headers at once, then a body a byte every
    ``interval`` seconds) or ``trickle-headers`` (the status line and headers
    themselves a byte at a time). Each mode stops at the first failed write, when
    the client gave up; ``finished`` counts the answers sent whole, ``sent`` the
    bytes written. A trickle is ``length`` bytes long, so a test is bounded even if
    the client never gives up.
    """

    mode: str
    status: int = 503
    size: int = 200 * 1024 * 1024
    length: int = 40
    interval: float = 0.25
    port: int = 0
    sent: int = 0
    finished: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    PROTOCOL: ClassVar[str] = "HTTP/1.1"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/otlp/v1/logs"

    def on_post(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        with self.lock:
            self.requests += 1
        try:
            whole = self._answer(request.wfile)
        except OSError:
            whole = False  # the client hung up
        with self.lock:
            self.finished += whole
        request.close_connection = True

    def _answer(self, out: Any) -> bool:
        """Write the answer of ``mode``; True once all of it was written."""
        length = self.size if self.mode == "huge" else self.length
        head = f"HTTP/1.1 {self.status} Trouble\r\nContent-Type: text/plain\r\nContent-Length: {length}\r\n\r\n"
        if self.mode == "trickle-headers":
            self._trickle(out, head.encode())
            return True
        self._write(out, head.encode())
        if self.mode == "huge":
            block = b"x" * (1024 * 1024)
            for start in range(0, length, len(block)):
                self._write(out, block[: length - start])
            return True
        self._trickle(out, b"y" * length)
        return True

    def _trickle(self, out: Any, data: bytes) -> None:
        for byte in range(len(data)):
            if byte:
                time.sleep(self.interval)
            self._write(out, data[byte : byte + 1])

    def _write(self, out: Any, data: bytes) -> None:
        out.write(data)
        out.flush()
        with self.lock:
            self.sent += len(data)
