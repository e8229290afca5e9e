"""MCP server: the ``get_job_status`` and ``list_connections`` tools for AI agents.

The tools answer from the same read model as the HTTP read API
(:mod:`.readmodel`), either straight from a store (``calabi-exporter mcp
--data-dir``) or through a running exporter's read API (``--url``), so an
agent, a script and Grafana all see the same answers. A bad argument comes back
as a tool error naming it; the server keeps serving. Over HTTP, :mod:`.mcp_http`
decides which requests reach the tools.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Protocol
from urllib.parse import quote

import requests
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from . import __version__, readmodel
from .model import FinishedStatus, Status
from .sessions import ThreadSessions
from .store import JobReads, StoreError
from .timeutil import Clock, system_clock

Params = dict[str, list[str]]

INSTRUCTIONS = """\
Calabi Connect sync jobs: each job copies data for one connection (a source to a destination, e.g.
"Salesforce → Snowflake") and ends succeeded, failed or cancelled. Use get_job_status for jobs (one by id,
or a filtered list such as the failed jobs of the last 24 hours) and list_connections for the health of
connections (last success, consecutive failures, success ratio and average duration over a window, or the
connections without a success for a given time). Times are UTC."""


class ReadSource(Protocol):
    """Where the tools read: a store, or a running exporter's read API."""

    def jobs(self, params: Params) -> dict[str, Any]: ...

    def job(self, job_id: str, params: Params) -> dict[str, Any] | None: ...

    def connections(self, params: Params) -> dict[str, Any]: ...


class StoreSource:
    """Reads the store directly (the exporter's data directory)."""

    def __init__(self, store: JobReads, clock: Clock = system_clock) -> None:
        self._store = store
        self._clock = clock

    def jobs(self, params: Params) -> dict[str, Any]:
        return readmodel.list_jobs(self._store, params, self._clock())

    def job(self, job_id: str, params: Params) -> dict[str, Any] | None:
        return readmodel.get_job(self._store, job_id, params)

    def connections(self, params: Params) -> dict[str, Any]:
        return readmodel.list_connections(self._store, params, self._clock())


class HttpSource:
    """Reads a running exporter's read API; its 400 answers become :class:`readmodel.BadParameter`."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self._base = base_url.rstrip("/")
        headers = {"User-Agent": f"calabi-exporter-mcp/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        # Tool calls run on worker threads: each gets its own session.
        self._sessions = ThreadSessions(lambda session: session.headers.update(headers))
        self._timeout = timeout

    def _get(self, path: str, params: Params, *, missing_ok: bool = False) -> dict[str, Any] | None:
        """The JSON answer; None for a 404 only where a missing item is an answer (``missing_ok``)."""
        try:
            response = self._sessions.get().get(self._base + path, params=params, timeout=self._timeout)
        except requests.RequestException as error:
            raise ToolError(f"the exporter at {self._base} cannot be reached: {type(error).__name__}") from None
        if response.status_code == 404:
            if missing_ok:
                return None
            raise ToolError(f"the exporter at {self._base} has no {path} (HTTP 404); check the --url it was given")
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise ToolError(f"the exporter answered HTTP {response.status_code} without JSON") from None
        if response.status_code == 400:
            raise readmodel.BadParameter(str(body.get("field")), str(body.get("error")))
        if response.status_code != 200:
            raise ToolError(f"the exporter answered HTTP {response.status_code}: {body.get('error', '')}")
        return body

    def jobs(self, params: Params) -> dict[str, Any]:
        return self._get("/api/v1/jobs", params) or {}

    def job(self, job_id: str, params: Params) -> dict[str, Any] | None:
        return self._get(f"/api/v1/jobs/{quote(job_id, safe='')}", params, missing_ok=True)

    def connections(self, params: Params) -> dict[str, Any]:
        return self._get("/api/v1/connections", params) or {}


def _params(**values: str | int | list[str] | None) -> Params:
    """Tool arguments as query parameters (None left out)."""
    out: Params = {}
    for name, value in values.items():
        if value is None:
            continue
        out[name] = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return out


def _answer(read: Callable[[], Any]) -> Any:
    """Run a read; expected failures become tool errors with a message for the model."""
    try:
        return read()
    except readmodel.BadParameter as error:
        raise ToolError(f"bad argument {error.name}: {error.message}") from None
    except StoreError as error:
        raise ToolError(f"the job store cannot be read: {error}") from None


def build_server(source: ReadSource) -> MCPServer:
    """The MCP server with both tools, reading from ``source``."""
    server = MCPServer("calabi-connect-exporter", instructions=INSTRUCTIONS, version=__version__)

    @server.tool(
        name="get_job_status",
        description=(
            "Status of Calabi Connect sync jobs. Give job_id for one job (its Summary, streams, error summary and "
            "its first ERROR log lines), or filters for a list, newest first by when each job was queued (or "
            "started): e.g. status=['failed'] and since='24h' for 'failed sync jobs in the last 24 hours'. "
            "Each job has connection_name, status, started_at/finished_at, duration_seconds, "
            "records_synced/records_failed, bytes_synced, streams_succeeded/streams_failed, error_summary and job_url."
        ),
    )
    def get_job_status(
        job_id: Annotated[str | None, Field(description="One job's id; the filters are ignored when given")] = None,
        connection: Annotated[
            list[str] | None,
            Field(description="Connection names or ids; a part of a name also matches, e.g. 'salesforce'"),
        ] = None,
        status: Annotated[list[Status] | None, Field(description="Only jobs with these statuses")] = None,
        since: Annotated[
            str | None,
            Field(
                description="Only jobs queued (or started) from this time on: an age before now ('24h', '7d') "
                "or RFC 3339"
            ),
        ] = None,
        limit: Annotated[int, Field(ge=1, le=200, description="Most jobs to return, newest first")] = 20,
    ) -> dict[str, Any]:
        if job_id is not None:
            document = _answer(lambda: source.job(job_id, _params(level=["ERROR"], limit=5)))
            if document is None:
                raise ToolError(f"no job with id {job_id!r}")
            logs = document.pop("logs")
            document["error_lines"] = [line["message"] for line in logs["lines"]]
            return {"jobs": [document], "more": False}
        page = _answer(
            lambda: source.jobs(
                _params(connection=connection, status=list(status or []) or None, since=since, limit=limit)
            )
        )
        return {"jobs": page.get("jobs", []), "more": page.get("next_cursor") is not None}

    @server.tool(
        name="list_connections",
        description=(
            "Health of Calabi Connect connections: latest job and status, last success and failure times, "
            "consecutive failures, and over a window (default 7d) the jobs by status, the success ratio and "
            "avg_duration_seconds (the average sync duration). stale_for='3d' lists the connections that have "
            "not synced successfully in the last 3 days (including ones that never did); last_status=['failed'] "
            "the ones whose latest job failed."
        ),
    )
    def list_connections(
        connection: Annotated[
            list[str] | None,
            Field(description="Connection names or ids; a part of a name also matches, e.g. 'salesforce'"),
        ] = None,
        window: Annotated[
            str, Field(description="Window of the job counts, success ratio and average duration, e.g. '7d', '24h'")
        ] = "7d",
        stale_for: Annotated[
            str | None, Field(description="Only connections without a successful sync for this long, e.g. '3d'")
        ] = None,
        last_status: Annotated[
            list[FinishedStatus] | None, Field(description="Only connections whose latest finished job has this status")
        ] = None,
    ) -> dict[str, Any]:
        params = _params(
            connection=connection, window=window, stale_for=stale_for, last_status=list(last_status or []) or None
        )
        answer: dict[str, Any] = _answer(lambda: source.connections(params))
        return answer

    return server
