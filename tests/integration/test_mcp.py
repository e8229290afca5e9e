"""`calabi-exporter mcp` as a real subprocess, driven by the MCP SDK's client, answers the agent's three questions."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import requests
from calabi_exporter.joblogs import LogLine
from calabi_exporter.model import LATEST_TIME, parse_job
from calabi_exporter.sources import airbyte, fivetran
from calabi_exporter.store import Store
from calabi_exporter.timeutil import format_rfc3339
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.support.clock import FakeClock
from tests.support.exporter_process import ExporterProcess
from tests.support.paths import DATA
from tests.support.processes import environment_without_calabi, free_port
from tests.support.waiting import wait_until

SF = "Salesforce → Snowflake"
STRIPE = "Stripe → Postgres"
HUBSPOT = "HubSpot → BigQuery"
ZENDESK = "Zendesk Support → Snowflake"
HOUR = 3600.0
DAY = 86400.0


def job(job_id: str, connection: str, status: str, started_hours_ago: float, minutes: float, **extra: Any) -> Any:
    """A finished job that started that many hours before now and ran that many minutes."""
    start = NOW - started_hours_ago * HOUR
    end_field = "failed_at" if status == "failed" else "finished_at"
    return parse_job(
        {
            "job_id": job_id,
            "connection_name": connection,
            "status": status,
            "started_at": format_rfc3339(start),
            end_field: format_rfc3339(start + minutes * 60),
            **extra,
        }
    )


NOW = float(int(time.time()))


@pytest.fixture
def data_dir(tmp_path: Path, make_store: Callable[..., Store]) -> Path:
    """Four connections; the jobs are dated from now, since the server reads the real clock."""
    clock = FakeClock(NOW - 5 * DAY)  # every connection was first seen five days ago
    store = make_store(tmp_path / "data", clock=clock)
    store.ingest.jobs(
        [
            job("sf-0", SF, "succeeded", 10 * 24, 80),  # last week: outside "this week"
            job("st-0", STRIPE, "succeeded", 4 * 24 + 1, 5),
            parse_job({"job_id": "zd-0", "connection_name": ZENDESK, "status": "pending"}),
            parse_job({"job_id": "hs-0", "connection_name": HUBSPOT, "status": "pending"}),
        ],
        endpoint="jobs",
    )
    clock.now = NOW
    store.ingest.jobs(
        [
            job("sf-1", SF, "succeeded", 6 * 24, 10),
            job("sf-2", SF, "succeeded", 3 * 24, 15),
            job("sf-3", SF, "succeeded", 30, 20),
            job("sf-4", SF, "failed", 3, 5, error_summary="Stream Account: 401 Unauthorized — token expired"),
            job("st-1", STRIPE, "failed", 30, 2, error_summary="429 Too Many Requests"),
            job("st-2", STRIPE, "failed", 2, 1, error_summary="Connection reset by peer"),
            job("hs-1", HUBSPOT, "succeeded", 1, 3),
            job("zd-1", ZENDESK, "failed", 50, 4, error_summary="schema mismatch: column 'priority' unknown"),
        ],
        endpoint="jobs",
    )
    store.ingest.logs("sf-4", [LogLine("INFO", "Syncing stream: Account"), LogLine("ERROR", "401 Unauthorized")])
    store.close()
    return tmp_path / "data"


def run_client(arguments: list[str], session: Callable[[Client], Any]) -> Any:
    env = environment_without_calabi()
    params = StdioServerParameters(command=sys.executable, args=["-m", "calabi_exporter", "mcp", *arguments], env=env)

    async def main() -> Any:
        async with Client(params, read_timeout_seconds=30) as client:
            return await session(client)

    return asyncio.run(asyncio.wait_for(main(), timeout=60))


async def ask(client: Client, tool: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        return True, " ".join(getattr(c, "text", "") for c in result.content)
    return False, result.structured_content


def test_the_tools_are_listed_with_schemas_an_agent_can_fill(data_dir: Path) -> None:
    async def session(client: Client) -> Any:
        return (await client.list_tools()).tools

    tools = {tool.name: tool for tool in run_client(["--data-dir", str(data_dir)], session)}

    assert sorted(tools) == ["get_job_status", "list_connections"]
    job_props = tools["get_job_status"].input_schema["properties"]
    conn_props = tools["list_connections"].input_schema["properties"]
    assert sorted(job_props) == ["connection", "job_id", "limit", "since", "status"]
    assert sorted(conn_props) == ["connection", "last_status", "stale_for", "window"]
    assert "failed" in str(job_props["status"]) and "24h" in job_props["since"]["description"]
    assert "3d" in conn_props["stale_for"]["description"]
    assert "average sync duration" in (tools["list_connections"].description or "")
    assert "last 24 hours" in (tools["get_job_status"].description or "")


def test_the_three_questions_get_exact_answers_and_a_bad_argument_is_a_tool_error(data_dir: Path) -> None:
    async def session(client: Client) -> Any:
        return [
            # "Show me failed sync jobs from the last 24 hours"
            await ask(client, "get_job_status", {"status": ["failed"], "since": "24h"}),
            # "What's the average sync duration for the Salesforce connection this week?"
            await ask(client, "list_connections", {"connection": ["Salesforce"], "window": "7d"}),
            # "Which connections haven't synced successfully in the last 3 days?"
            await ask(client, "list_connections", {"stale_for": "3d"}),
            await ask(client, "get_job_status", {"since": "yesterday"}),
            await ask(client, "get_job_status", {"limit": 0}),
            await ask(client, "get_job_status", {"job_id": "no-such-job"}),
            await ask(client, "get_job_status", {"job_id": "sf-4"}),
        ]

    failed, salesforce, stale, bad_since, bad_limit, unknown, one = run_client(["--data-dir", str(data_dir)], session)

    assert failed[0] is False
    assert [(j["job_id"], j["connection_name"], j["error_summary"]) for j in failed[1]["jobs"]] == [
        ("st-2", STRIPE, "Connection reset by peer"),
        ("sf-4", SF, "Stream Account: 401 Unauthorized — token expired"),
    ]
    assert salesforce[0] is False
    [sf] = salesforce[1]["connections"]
    assert (sf["connection_name"], sf["avg_duration_seconds"], sf["jobs"]) == (
        SF,
        (10 + 15 + 20 + 5) * 60 / 4,
        {"succeeded": 3, "failed": 1, "cancelled": 0},
    )
    assert stale[0] is False
    assert [(c["connection_name"], c["last_success_at"]) for c in stale[1]["connections"]] == [
        (STRIPE, format_rfc3339(NOW - (4 * 24 + 1) * HOUR + 5 * 60)),
        (ZENDESK, None),
    ]
    assert bad_since[0] is True and "bad argument since: must be RFC 3339" in bad_since[1]
    assert bad_limit[0] is True and "limit" in bad_limit[1]
    assert unknown == (True, unknown[1]) and "no job with id 'no-such-job'" in unknown[1]
    assert one[0] is False
    [detail] = one[1]["jobs"]
    assert (detail["status"], detail["duration_seconds"], detail["error_lines"]) == (
        "failed",
        300.0,
        ["401 Unauthorized"],
    )


def test_through_a_running_exporters_read_api_the_answers_are_the_same(
    data_dir: Path, exporter_process: Callable[..., ExporterProcess]
) -> None:
    exporter = exporter_process(data_dir=data_dir)

    async def session(client: Client) -> Any:
        return [
            await ask(client, "list_connections", {"stale_for": "3d"}),
            await ask(client, "get_job_status", {"status": ["failed"], "since": "24h"}),
            await ask(client, "list_connections", {"window": "eternity"}),
        ]

    stale, failed, bad = run_client(["--url", exporter.url], session)
    wrong_path = run_client(["--url", exporter.url + "/calabi"], session)

    assert [c["connection_name"] for c in stale[1]["connections"]] == [STRIPE, ZENDESK]
    assert [j["job_id"] for j in failed[1]["jobs"]] == ["st-2", "sf-4"]
    assert bad[0] is True and "bad argument window: must be a duration like 30m, 24h, 7d or 2w" in bad[1]
    # A wrong URL is an error, not an empty answer.
    assert [error for error, _ in wrong_path] == [True, True, True]
    assert f"the exporter at {exporter.url}/calabi has no /api/v1/connections (HTTP 404)" in wrong_path[0][1]


READ_TOKEN = "read-token-for-agents-0123456789"
INGEST_TOKEN = "ingest-token-for-writers-0123456789"
TOKENS = {"CALABI_READ_TOKENS": READ_TOKEN, "CALABI_INGEST_TOKENS": INGEST_TOKEN}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}


@pytest.fixture
def mcp_http(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Starts ``calabi-exporter mcp --http`` on a free loopback port; gives its /mcp URL."""
    running: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(data_dir: Path, *, host: str = "127.0.0.1", env: dict[str, str] | None = None) -> str:
        port = free_port()
        log_path = tmp_path / f"mcp-http-{port}.log"
        log = log_path.open("wb")
        command = ["mcp", "--data-dir", str(data_dir), "--http", "--http-listen", f"{host}:{port}"]
        process = subprocess.Popen(
            [sys.executable, "-m", "calabi_exporter", *command],
            env={**environment_without_calabi(), **(env or {})},
            stdout=log,
            stderr=log,
        )
        running.append((process, log))

        def listening() -> bool:
            assert process.poll() is None, log_path.read_text()
            with socket.socket() as sock:
                return sock.connect_ex((host, port)) == 0

        wait_until(listening, timeout=30, what="the MCP HTTP server")
        return f"http://{host}:{port}/mcp"

    yield start
    for process, log in running:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def post(url: str, **headers: str) -> requests.Response:
    """An MCP ``initialize`` request with these headers (``Host`` replaces the URL's)."""
    accept = {"Accept": "application/json, text/event-stream"}
    return requests.post(url, json=INITIALIZE, headers={**accept, **headers}, timeout=30)


def post_cases(url: str, cases: dict[str, tuple[dict[str, str], int]]) -> dict[str, requests.Response]:
    """Each case's request: the read token and the case's headers (the status it expects is the test's)."""
    return {case: post(url, Authorization=f"Bearer {READ_TOKEN}", **headers) for case, (headers, _) in cases.items()}


def refusal(field: str, message: str) -> dict[str, Any]:
    """The JSON-RPC error the server answers a refused request with."""
    return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message, "data": {"field": field}}}


async def ask_over_http(url: str, token: str | None, tool: str, arguments: dict[str, Any]) -> tuple[bool, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), read_timeout_seconds=30) as client,
    ):
        return await ask(client, tool, arguments)


def test_streamable_http_serves_the_same_tools(data_dir: Path, mcp_http: Callable[..., str]) -> None:
    url = mcp_http(data_dir)

    error, answer = asyncio.run(asyncio.wait_for(ask_over_http(url, None, "list_connections", {"stale_for": "3d"}), 60))

    assert error is False
    assert [c["connection_name"] for c in answer["connections"]] == [STRIPE, ZENDESK]


def test_with_read_tokens_a_tool_call_needs_a_read_token_and_the_ingest_token_is_refused(
    data_dir: Path, mcp_http: Callable[..., str]
) -> None:
    url = mcp_http(data_dir, env=TOKENS)

    answers = [
        post(url),
        post(url, Authorization=f"Bearer {INGEST_TOKEN}"),
        post(url, Authorization=f"Bearer {READ_TOKEN}x"),
        post(url, Authorization=f"Basic {READ_TOKEN}"),
        post(url, Authorization=f"Bearer {READ_TOKEN}"),
    ]
    error, answer = asyncio.run(
        asyncio.wait_for(ask_over_http(url, READ_TOKEN, "get_job_status", {"status": ["failed"], "since": "24h"}), 60)
    )

    unauthorized = refusal("Authorization", "missing or wrong bearer token (a read token)")
    assert [(r.status_code, r.headers.get("WWW-Authenticate")) for r in answers] == [
        *[(401, "Bearer")] * 4,
        (200, None),
    ]
    assert [r.json() for r in answers[:4]] == [unauthorized] * 4
    assert error is False
    assert [j["job_id"] for j in answer["jobs"]] == ["st-2", "sf-4"]


def test_a_request_naming_another_host_or_sent_by_a_foreign_page_gets_403_even_with_the_token(
    data_dir: Path, mcp_http: Callable[..., str]
) -> None:
    # 127.0.0.2 is a loopback address too, but not the one the SDK guarded by itself.
    url = mcp_http(data_dir, host="127.0.0.2", env=TOKENS)
    port = url.split(":")[2].removesuffix("/mcp")

    cases = {  # what the request carries besides the token, and the status it gets
        "its address": ({}, 200),
        "localhost": ({"Host": f"localhost:{port}"}, 200),
        "a page served from this machine": ({"Origin": "http://localhost:6274"}, 200),
        "a rebound name": ({"Host": f"attacker.example:{port}"}, 403),
        "a malformed Host": ({"Host": "localhost:80@attacker.example"}, 403),
        "a foreign page": ({"Origin": "http://attacker.example"}, 403),
        "an opaque origin": ({"Origin": "null"}, 403),
    }

    answers = post_cases(url, cases)

    assert {case: answer.status_code for case, answer in answers.items()} == {c: s for c, (_, s) in cases.items()}
    host = refusal("Host", "the Host header does not name this server; see mcp.allowed_hosts")
    origin = refusal("Origin", "requests from this Origin are not allowed; see mcp.allowed_origins")
    assert [answers[case].json() for case in ("a rebound name", "a malformed Host")] == [host, host]
    assert [answers[case].json() for case in ("a foreign page", "an opaque origin")] == [origin, origin]


def test_more_host_names_and_origins_are_allowed_by_configuration_and_only_those(
    data_dir: Path, mcp_http: Callable[..., str]
) -> None:
    allowed = {
        "CALABI_MCP__ALLOWED_HOSTS": "mcp.internal.example",
        "CALABI_MCP__ALLOWED_ORIGINS": "https://agent.example.com",
    }
    url = mcp_http(data_dir, env={**TOKENS, **allowed})

    cases = {
        "an allowed name": ({"Host": "mcp.internal.example:8443"}, 200),
        "an allowed origin": ({"Origin": "https://agent.example.com"}, 200),
        "another name under it": ({"Host": "evil.mcp.internal.example"}, 403),
        "a longer origin": ({"Origin": "https://agent.example.com.attacker.example"}, 403),
        "another scheme": ({"Origin": "http://agent.example.com"}, 403),
    }

    answers = post_cases(url, cases)

    assert {case: answer.status_code for case, answer in answers.items()} == {c: s for c, (_, s) in cases.items()}


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({}, id="no tokens"),
        pytest.param({"CALABI_INGEST_TOKENS": INGEST_TOKEN}, id="an ingest token only"),
    ],
)
def test_mcp_http_on_every_interface_without_read_tokens_exits_2_with_one_line(
    tmp_path: Path, env: dict[str, str]
) -> None:
    command = ["mcp", "--data-dir", str(tmp_path / "none"), "--http", "--http-listen", "0.0.0.0:9189"]

    result = subprocess.run(
        [sys.executable, "-m", "calabi_exporter", *command],
        env={**environment_without_calabi(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert (result.returncode, result.stderr) == (
        2,
        "calabi-exporter: config error: read_tokens: required when mcp --http-listen (0.0.0.0:9189) is not a "
        "loopback address; agents send one as a bearer token\n",
    )
    assert not (tmp_path / "none").exists()


def test_mcp_without_a_store_or_with_a_bad_url_exits_2_with_one_line(tmp_path: Path) -> None:
    env = environment_without_calabi()
    base = [sys.executable, "-m", "calabi_exporter", "mcp"]

    empty = subprocess.run([*base, "--data-dir", str(tmp_path / "none")], env=env, capture_output=True, text=True)
    bad_url = subprocess.run([*base, "--url", "exporter:9188"], env=env, capture_output=True, text=True)

    assert [(r.returncode, r.stderr) for r in (empty, bad_url)] == [
        (
            2,
            f"calabi-exporter: config error: data_dir: no store in {tmp_path / 'none'};"
            " give the exporter's data_dir, or --url\n",
        ),
        (
            2,
            "calabi-exporter: config error: --url: must be an http:// or https:// URL with a valid host"
            " (got 'exporter:9188')\n",
        ),
    ]
    assert not (tmp_path / "none").exists()


def test_airbyte_and_fivetran_jobs_are_answered_like_any_other_with_their_platform(
    tmp_path: Path, make_store: Callable[..., Store]
) -> None:
    # The vendors' own payloads (tests/data/sources/, sources in its README), read by the sources.
    store = make_store(tmp_path / "sources", clock=FakeClock(NOW))
    notification = json.loads((DATA / "sources" / "airbyte" / "docs-failed-sync.json").read_bytes())
    event = json.loads((DATA / "sources" / "fivetran" / "sync-end-successful.live.json").read_bytes())
    jobs = [
        airbyte.read_notification(notification, latest=LATEST_TIME).job,
        fivetran.read_event(event, latest=LATEST_TIME).job,
    ]
    store.ingest.jobs([job for job in jobs if job is not None], endpoint="jobs")
    store.close()

    async def session(client: Client) -> Any:
        return [
            await ask(client, "get_job_status", {"job_id": "airbyte:9988"}),
            await ask(client, "list_connections", {"connection": ["Connection", "ftar_pg"]}),
        ]

    (error, answer), (listing_error, listing) = run_client(["--data-dir", str(tmp_path / "sources")], session)

    assert (error, listing_error) == (False, False)
    [detail] = answer["jobs"]
    assert (detail["platform"], detail["status"], detail["error_summary"]) == (
        "airbyte",
        "failed",
        "Something failed (type: config_error, origin: source)",
    )
    assert [(c["connection_name"], c["platform"], c["last_status"]) for c in listing["connections"]] == [
        ("Connection", "airbyte", "failed"),
        ("ftar_pg", "fivetran", "succeeded"),
    ]
