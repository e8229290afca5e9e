"""`calabi-exporter mcp` as a real subprocess, driven by the MCP SDK's client, answers the agent's three questions."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from calabi_exporter.joblogs import LogLine
from calabi_exporter.model import parse_job
from calabi_exporter.store import Store
from calabi_exporter.timeutil import format_rfc3339
from mcp import Client, StdioServerParameters

from .conftest import ExporterProcess, FakeClock, environment_without_calabi, free_port, wait_until

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


def test_streamable_http_serves_the_same_tools(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = environment_without_calabi()
    log = (tmp_path / "mcp-http.log").open("wb")
    command = ["mcp", "--data-dir", str(data_dir), "--http", "--http-listen", f"127.0.0.1:{port}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "calabi_exporter", *command],
        env=env,
        stdout=log,
        stderr=log,
    )

    def listening() -> bool:
        assert process.poll() is None, (tmp_path / "mcp-http.log").read_text()
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, timeout=30, what="the MCP HTTP server")

        async def main() -> Any:
            async with Client(f"http://127.0.0.1:{port}/mcp", read_timeout_seconds=30) as client:
                return await ask(client, "list_connections", {"stale_for": "3d"})

        error, answer = asyncio.run(asyncio.wait_for(main(), timeout=60))
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()

    assert error is False
    assert [c["connection_name"] for c in answer["connections"]] == [STRIPE, ZENDESK]


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
