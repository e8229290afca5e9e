"""``calabi-exporter mcp --http``: the MCP tools over Streamable HTTP, closed like ``serve``.

A web page in a user's browser can reach a server on the user's machine or
network by pointing its own name at that address (DNS rebinding); its requests
then carry the page's name in ``Host`` and its origin in ``Origin``. So every
request must name this server (a loopback name, the ``--http-listen`` address or
one of ``mcp.allowed_hosts``) and come from no page or an allowed one (a
loopback origin or one of ``mcp.allowed_origins``), else it gets 403, as the MCP
specification's Streamable HTTP transport asks. Then it must carry one of
``read_tokens`` when any is set, else 401: the tools only read, so an agent is
given a read token, never an ingest token, which is refused here. Without read
tokens the server listens on a loopback address only.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from dataclasses import dataclass
from typing import Final

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .config import EVERY_INTERFACE, Config, ConfigError, is_loopback, split_listen
from .tokens import bearer, matches_any

log = logging.getLogger(__name__)

#: The path of the MCP endpoint.
PATH: Final = "/mcp"
#: JSON-RPC's "invalid request", which the SDK answers its own transport errors with too.
INVALID_REQUEST: Final = -32600
#: A ``Host`` header: a name or IPv4 address, or a bracketed IPv6 address, then an optional port.
_HOST_HEADER: Final = re.compile(r"^(?:\[(?P<ip6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9._-]+))(?::[0-9]{1,5})?$")


def parse_listen(text: str) -> tuple[str, int]:
    """``--http-listen``'s host (IPv6 without brackets) and port, read as ``listen`` is; a host is required.

    >>> parse_listen("127.0.0.1:9189"), parse_listen("[::1]:9189")
    (('127.0.0.1', 9189), ('::1', 9189))
    """
    try:
        host, port = split_listen(text)
    except ValueError:
        host, port = "", 0
    if not host:  # every interface is no default here: the address agents reach is given
        raise ConfigError("--http-listen", f"must be host:port, e.g. 127.0.0.1:9189 (got {text!r})")
    return host, port


def exposure_problem(config: Config, listen: str) -> ConfigError | None:
    """Why serving the tools on ``listen`` would open them to anyone who reaches it, if it would."""
    if config.read_tokens or is_loopback(parse_listen(listen)[0]):
        return None
    return ConfigError(
        "read_tokens",
        f"required when mcp --http-listen ({listen}) is not a loopback address; agents send one as a bearer token",
    )


def host_name(header: str) -> str:
    """The name a ``Host`` header gives, lower-cased, without port or brackets; empty when malformed.

    >>> [host_name(h) for h in ("MCP.example:9189", "[::1]:9189", "127.0.0.1", "localhost:80@evil.example")]
    ['mcp.example', '::1', '127.0.0.1', '']
    """
    match = _HOST_HEADER.match(header.strip().lower())
    if match is None:
        return ""
    return (match["ip6"] or match["name"]).rstrip(".")


@dataclass(frozen=True, slots=True)
class Policy:
    """Which requests the HTTP server answers: the host names, browser origins and tokens it accepts."""

    hosts: frozenset[str]
    origins: frozenset[str]
    tokens: tuple[str, ...]

    @classmethod
    def from_config(cls, config: Config, listen_host: str) -> Policy:
        """The configured names and origins, plus the address the server listens on when it is a specific one."""
        bound = listen_host.strip("[]").lower()
        hosts = {*config.mcp_allowed_hosts, *({bound} - set(EVERY_INTERFACE))}
        return cls(frozenset(hosts), frozenset(config.mcp_allowed_origins), config.read_tokens)

    def host_allowed(self, header: str | None) -> bool:
        """A loopback name, or one this server was given; a page's rebound name is neither."""
        name = host_name(header or "")
        return bool(name) and (is_loopback(name) or name in self.hosts)

    def origin_allowed(self, header: str | None) -> bool:
        """No ``Origin`` (not a browser), a page served from this machine, or a listed origin."""
        if header is None:
            return True
        parts = urllib.parse.urlsplit(header.strip().lower())
        if parts.scheme not in ("http", "https"):
            return False
        origin = f"{parts.scheme}://{parts.netloc}"
        return origin == header.strip().lower() and (is_loopback(host_name(parts.netloc)) or origin in self.origins)

    def token_accepted(self, header: str | None) -> bool:
        """A read token in ``Authorization: Bearer``, compared in constant time; any request when none is set."""
        if not self.tokens:
            return True
        return matches_any(bearer(header), self.tokens)


class Guard:
    """ASGI middleware answering 403 or 401 (a JSON-RPC error) to a request :class:`Policy` refuses."""

    def __init__(self, app: ASGIApp, policy: Policy) -> None:
        self._app = app
        self._policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(Headers(scope=scope))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self._app(scope, receive, send)

    def _refusal(self, headers: Headers) -> JSONResponse | None:
        host, origin = headers.get("host"), headers.get("origin")
        if not self._policy.host_allowed(host):
            log.warning("refused a request for Host %r: not a name of this server (mcp.allowed_hosts)", host)
            return _error(403, "Host", "the Host header does not name this server; see mcp.allowed_hosts")
        if not self._policy.origin_allowed(origin):
            log.warning("refused a request from Origin %r (mcp.allowed_origins)", origin)
            return _error(403, "Origin", "requests from this Origin are not allowed; see mcp.allowed_origins")
        if not self._policy.token_accepted(headers.get("authorization")):
            return _error(401, "Authorization", "missing or wrong bearer token (a read token)")
        return None


def _error(status: int, field: str, message: str) -> JSONResponse:
    """A JSON-RPC error without id, naming the header at fault, as the transport answers before any message."""
    body = {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": INVALID_REQUEST, "message": message, "data": {"field": field}},
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def serve(server: MCPServer, config: Config, host: str, port: int) -> None:
    """Serve ``server``'s tools at ``http://host:port/mcp`` behind the :class:`Guard` until interrupted."""
    app = server.streamable_http_app(
        streamable_http_path=PATH,
        # The Guard checks Host and Origin on every path, with this server's own names.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        host=host,
    )
    guarded = Guard(app, Policy.from_config(config, host))
    uvicorn.Server(uvicorn.Config(guarded, host=host, port=port, log_level=config.log_level)).run()
