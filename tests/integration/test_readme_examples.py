"""Every shell example of the Markdown documents (:data:`DOCUMENTS`) runs here, or names the test that runs it.

Which blocks: every fenced block tagged ``sh``, ``bash``, ``shell``, ``console`` (or untagged).
Each is run by a test of this module, chosen by what it holds (:func:`how_it_runs`), or carries
``<!-- example: runs in tests/<file>.py[::function] ... -->`` on the line above its fence, naming
the test (or ``.ci/run``) that runs what it shows, or ``<!-- example: not run: <why> -->``. A new
block that is neither fails :func:`test_every_shell_example_is_run_here_or_names_the_test_that_runs_it`.

How they run, each with the package's commands (``calabi-exporter``, ``python``) first on ``PATH``:

- ``curl`` against ``localhost:9188`` (with shell variables): the HTTP session. One shell, in the
  documents' order, against one exporter started by the README's own ``calabi-exporter serve
  --config calabi.yml`` with the README's ``calabi.yml`` and the default retention; each block with
  ``bash -euo pipefail``, the variables one block sets kept for the next, ``TOKEN`` set to the
  file's ingest token. The one rewrite: ``localhost:9188`` (or ``127.0.0.1:9188``) in a command
  becomes the test server's address. An answer shown below a command (``# {...}``) is compared
  with what the command printed as JSON, after the same shell expanded the ``$VARIABLES`` in it;
  ``...`` matches only where the README itself elides. A command without one must print JSON
  that is not an error. What a block says it does (a job stored, lines read, a connection
  forgotten) is then checked through the API and ``/metrics`` (:data:`CLAIMS`).
- ``calabi-exporter <command>`` lines: run as written in a directory holding the README's
  ``calabi.yml``. That file is for a real host (``0.0.0.0:9188``, ``/var/lib/calabi-exporter``),
  so the commands reading it get the test server's ``CALABI_LISTEN`` and ``CALABI_DATA_DIR`` in
  their environment, and ``export`` the test's S3 (moto) as ``CALABI_S3_EXPORT__*``; ``demo`` gets
  a port and data directory of its own. ``demo`` and ``simulate`` get ``--duration 3`` appended
  when the line has no ``--duration`` (a bounded run); ``mcp`` is driven by the MCP SDK's client.
- ``NAME=value`` lines: settings a page says ``.env`` holds, commented out; it must.
- ``python calabi-connect-exporter/...``: run in a directory where ``calabi-connect-exporter`` is
  this clone, as the Kubernetes section lays it out.

The exporter's YAML configuration examples load with ``load_config``, and the MCP client's JSON
starts ``calabi-exporter mcp --url ...``. LogQL blocks run in ``tests/integration/test_logql_on_loki.py``; each
PromQL query runs here in Debian's Prometheus with the shipped rules, over names the exporter declares.
"""

from __future__ import annotations

import asyncio
import calendar
import doctest
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import pytest
import requests
import yaml
from calabi_exporter.config import load_config
from calabi_exporter.simulator import CONNECTIONS as SIMULATED
from calabi_exporter.store import Store
from mcp import Client, StdioServerParameters

from tests.support import markdown_examples
from tests.support.loki_server import Loki
from tests.support.markdown_examples import (
    ASSIGNMENT,
    SHELL_TAGS,
    Block,
    Ran,
    Terminal,
    blocks,
    differences,
    shown_answer,
    steps,
)
from tests.support.paths import ROOT, RULE_FILES
from tests.support.processes import environment_without_calabi, free_port
from tests.support.s3_server import BUCKET, MotoServer
from tests.support.samples import Samples, parse_samples
from tests.support.waiting import wait_until

#: The user's documents: every Markdown file of the repository but the tests' data notes.
DOCUMENTS: Final = (
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "alerting-rules").rglob("*.md")),
    ROOT / "dashboards" / "README.md",
)
THIS: Final = "tests/integration/test_readme_examples.py"
#: The address the examples use; the test server's replaces it in commands.
ADDRESS: Final = re.compile(r"\b(?:localhost|127\.0\.0\.1):9188\b")
#: A target of a mark: a test file, with a function, or the CI script.
TARGET: Final = re.compile(r"tests/[\w/]+\.py(?:::\w+)?|\.ci/run")
#: Test files being written beside this module: a mark may name them before they land.
ANNOUNCED: Final[frozenset[str]] = frozenset()
DOTENV_LINE: Final = re.compile(r"[A-Z_][A-Z0-9_]*=[^\s$`'\"]*")
BIN: Final = Path(sys.executable).parent  # where the package's commands are installed
DURATION: Final = "3"  # seconds of a bounded demo or simulator run

#: The README's section that writes ``calabi.yml`` and starts the exporter the other examples use.
QUICK_START: Final = "Quick start: from the demo to production"
SF: Final = "Salesforce → Snowflake"
FIRST: Final = "job_01HX4M9QZPKR"  # the README's job record
SECOND: Final = "job_01HX4N7T2QWB"  # the README's webhook

HTTP_SESSION: Final = "test_the_http_examples_answer_what_the_readme_shows_and_do_what_it_says"
CLI_LINES: Final = "test_the_command_lines_run_as_written"
DOTENV: Final = "test_the_settings_the_readme_shows_for_env_are_in_it_commented_out"
BESIDE_THE_CLONE: Final = "test_the_commands_run_beside_the_clone_write_what_the_next_step_uses"


def all_blocks() -> list[Block]:
    return [block for document in DOCUMENTS for block in blocks(document, ROOT)]


def shell_blocks() -> list[Block]:
    return [block for block in all_blocks() if block.tag in SHELL_TAGS]


def subcommand(command: str) -> str | None:
    words = shlex.split(command, comments=True)
    return words[1] if len(words) > 1 and words[0] == "calabi-exporter" else None


def how_it_runs(block: Block) -> str | None:
    """The test of this module that runs the block, or None when none can."""
    commands = [step.command for step in steps(block.text)]
    if not commands:
        return None
    if all(c.startswith("curl ") or ASSIGNMENT.match(c) for c in commands) and any(map(ADDRESS.search, commands)):
        return HTTP_SESSION
    if all(DOTENV_LINE.fullmatch(c) for c in commands):
        return DOTENV
    if all(subcommand(c) in CLI_RUNNERS for c in commands):
        return CLI_LINES
    if all(c.startswith("python calabi-connect-exporter/") for c in commands):
        return BESIDE_THE_CLONE
    return None


def run_by(test: str) -> list[Block]:
    """The unmarked blocks ``test`` runs, in the documents' order; there is at least one."""
    found = [block for block in shell_blocks() if block.mark is None and how_it_runs(block) == test]
    assert found, f"no block of the documents is run by {test} any more"
    return found


def problems(block: Block, root: Path = ROOT) -> list[str]:
    """Why ``block`` breaks the rule (run here, or marked with an existing test that runs it); empty if it keeps it."""
    if block.mark is None:
        if how_it_runs(block) is None:
            return [f"{block.where}: neither run by {THIS} nor marked with <!-- example: runs in <test file> -->"]
        return []
    if block.mark.startswith("not run: ") and block.mark.removeprefix("not run: ").strip():
        return []
    if not block.mark.startswith("runs in "):
        return [f"{block.where}: a mark says 'runs in <test file>' or 'not run: <why>', not {block.mark!r}"]
    targets = TARGET.findall(block.mark)
    if not targets:
        return [f"{block.where}: the mark names no test file or .ci/run: {block.mark!r}"]
    found = []
    for target in targets:
        path, _, function = target.partition("::")
        if not (root / path).exists():
            if path not in ANNOUNCED:
                found.append(f"{block.where}: the mark names {path}, which does not exist")
        elif function and not re.search(rf"^(async )?def {function}\(", (root / path).read_text("utf-8"), re.M):
            found.append(f"{block.where}: {path} has no test {function}")
    return found


def test_every_shell_example_is_run_here_or_names_the_test_that_runs_it() -> None:
    found = shell_blocks()

    assert len(found) >= 20
    assert [p for block in found for p in problems(block)] == []


def test_a_new_example_neither_run_nor_marked_or_marked_with_a_missing_test_is_named(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_there.py").write_text("def test_it() -> None:\n    pass\n", encoding="utf-8")
    document = tmp_path / "NEW.md"
    document.write_text(
        "# New\n\n```sh\nkubectl get pods\n```\n\n"
        "<!-- example: runs in tests/test_there.py::test_it -->\n```bash\nkubectl get pods\n```\n\n"
        "## More\n\n<!-- example: runs in tests/test_nowhere.py -->\n```\nkubectl get pods\n```\n\n"
        "<!-- example: runs in tests/test_there.py::test_other -->\n```console\nkubectl get pods\n```\n\n"
        "<!-- example: maybe later -->\n```sh\nkubectl get pods\n```\n",
        encoding="utf-8",
    )

    found = [p for block in blocks(document, tmp_path) for p in problems(block, tmp_path)]

    assert found == [
        f"NEW.md:3 (New): neither run by {THIS} nor marked with <!-- example: runs in <test file> -->",
        "NEW.md:15 (More): the mark names tests/test_nowhere.py, which does not exist",
        "NEW.md:20 (More): tests/test_there.py has no test test_other",
        "NEW.md:25 (More): a mark says 'runs in <test file>' or 'not run: <why>', not 'maybe later'",
    ]


def test_the_helpers_examples_hold() -> None:
    result = doctest.testmod(markdown_examples)

    assert (result.failed, result.attempted >= 4) == (0, True)


@pytest.mark.parametrize(
    ("shown", "actual", "found"),
    [
        pytest.param('{"a": 1}', {"a": 1}, [], id="equal"),
        pytest.param('{"a": 1}', {"a": 1.5}, ["answer.a: shown 1, got 1.5"], id="another value"),
        pytest.param('{"a": true}', {"a": 1}, ["answer.a: shown True, got 1"], id="a number is not a boolean"),
        pytest.param('{"a": 1, ...}', {"a": 1, "b": 2}, [], id="elided members"),
        pytest.param('{"a": 1}', {}, ["answer.a: shown, not in the answer"], id="a missing member"),
        pytest.param(
            '{"l": [{"a": 1, ...}]}', {"l": [{"a": 1}, {"a": 2}]}, ["answer.l: shown 1 items, got 2"], id="an item more"
        ),
        pytest.param('{"l": [1, ...]}', {"l": [1, 2]}, [], id="elided items"),
        pytest.param(
            '{"u": "https://..."}',
            {"u": "http://x"},
            ["answer.u: shown 'https://...', got 'http://x'"],
            id="elided text",
        ),
        pytest.param('{"c": ...}', {"c": None}, [], id="any value"),
    ],
)
def test_an_answer_matches_the_one_shown_only_where_the_readme_elides(
    shown: str, actual: Any, found: list[str]
) -> None:
    assert differences(shown_answer(shown), actual) == found


# ---------------------------------------------------------------- the exporter the README starts


@dataclass
class Sandbox:
    """Where a user runs the examples: the README's ``calabi.yml``, and a shell environment with ``$TOKEN``."""

    directory: Path
    token: str
    env: dict[str, str]


def configuration_example() -> str:
    """The ``calabi.yml`` of the README's quick start."""
    (block,) = [b for b in all_blocks() if b.tag == "yaml" and b.heading == QUICK_START]
    return block.text


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    assert (BIN / "calabi-exporter").exists(), f"calabi-exporter is not installed beside {sys.executable}"
    directory = tmp_path / "user"
    directory.mkdir()
    (directory / "calabi.yml").write_text(configuration_example(), encoding="utf-8")
    token = load_config(directory / "calabi.yml", env={}).ingest_tokens[0]
    env = environment_without_calabi()
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", TOKEN=token)
    return Sandbox(directory, token, env)


@dataclass
class Served:
    """The exporter a README line started, as a process group of its own."""

    process: subprocess.Popen[bytes]
    port: int
    token: str
    log: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def scrape(self) -> Samples:
        response = requests.get(self.url + "/metrics", timeout=30)
        assert response.status_code == 200, response.text
        return parse_samples(response.text)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def serve_line() -> str:
    """The README's ``calabi-exporter serve`` line."""
    lines = [s.command for b in run_by(CLI_LINES) for s in steps(b.text) if subcommand(s.command) == "serve"]
    assert lines, "the README no longer shows how to start the exporter"
    return lines[0]


@pytest.fixture
def start_exporter(sandbox: Sandbox, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``start_exporter(line, data_dir, port=None, **env)``: run a README ``serve`` line until it is ready.

    On ``port``, or a free one.
    """
    started: list[Served] = []

    def start(line: str, data_dir: Path, port: int | None = None, **env: str) -> Served:
        port = free_port() if port is None else port
        settings = {"CALABI_LISTEN": f"127.0.0.1:{port}", "CALABI_DATA_DIR": str(data_dir), **env}
        log = (tmp_path / f"exporter-{port}.log").open("wb")
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", line],
            cwd=sandbox.directory,
            env={**sandbox.env, **settings},
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        served = Served(process, port, sandbox.token, log)
        started.append(served)

        def ready() -> bool:
            assert process.poll() is None, (tmp_path / f"exporter-{port}.log").read_text("utf-8")
            try:
                return requests.get(served.url + "/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, timeout=30, what=f"`{line}` to be ready")
        return served

    yield start
    for served in started:
        served.stop()


# ---------------------------------------------------------------- the HTTP session


def the_job_is_stored(server: Served) -> None:
    job = server.get(f"/api/v1/jobs/{FIRST}").json()
    assert {key: job[key] for key in ("connection_name", "status", "records_synced", "duration_seconds")} == {
        "connection_name": SF,
        "status": "succeeded",
        "records_synced": 4218,
        "duration_seconds": 102.0,
    }
    assert server.scrape().value("calabi_sync_jobs_total", connection=SF, status="succeeded") == 1


def its_lines_are_stored_and_read(server: Served) -> None:
    lines = server.get(f"/api/v1/jobs/{FIRST}").json()["logs"]["lines"]
    assert [(line["level"], line["stream"], line["message"]) for line in lines] == [
        ("INFO", "Account", "Syncing stream: Account"),
        ("WARN", None, "Salesforce API rate limit at 85% — throttling requests"),
        ("INFO", "Account", "Stream Account: 4,218 records synced in 101.2s"),
    ]
    samples = server.scrape()
    assert samples.value("calabi_sync_log_lines_total", connection=SF, level="info") == 2
    assert samples.value("calabi_sync_log_lines_total", connection=SF, level="warn") == 1
    assert samples.value("calabi_sync_rate_limit_usage_ratio", connection=SF) == 0.85


def the_webhook_alone_records_the_failure(server: Served) -> None:
    job = server.get(f"/api/v1/jobs/{SECOND}").json()
    assert (job["status"], job["error_summary"]) == ("failed", "Stream Account: 401 Unauthorized — token expired")
    samples = server.scrape()
    assert samples.value("calabi_sync_jobs_total", connection=SF, status="failed") == 1
    assert samples.value("calabi_sync_consecutive_failures", connection=SF) == 1
    assert [dict(labels)["job_id"] for labels in samples.family("calabi_sync_last_job_info")] == [SECOND]


def the_connection_is_forgotten_and_its_jobs_kept(server: Served) -> None:
    samples = server.scrape()
    assert [name for name, labels in samples if dict(labels).get("connection") == SF] == []
    assert [server.get(f"/api/v1/jobs/{job_id}").status_code for job_id in (FIRST, SECOND)] == [200, 200]


#: What a block's section says it does, checked right after the block ran, by heading.
CLAIMS: Final[dict[str, Callable[[Served], None]]] = {
    "`POST /api/v1/jobs`: job records": the_job_is_stored,
    "`POST /api/v1/jobs/<job_id>/logs`: log lines": its_lines_are_stored_and_read,
    '`POST /webhooks/calabi`: the product\'s "Webhook (custom)"': the_webhook_alone_records_the_failure,
    "`DELETE /api/v1/connections/<name>`: forget a connection": the_connection_is_forgotten_and_its_jobs_kept,
}


def check_answer(ran: Ran) -> None:
    """The command printed the answer shown below it, or, when none is shown, JSON that is not an error."""
    where = f"{ran.block.where}: `{ran.step.command.splitlines()[0]}`"
    if ran.step.variable is not None:
        return
    try:
        answer = json.loads(ran.output)
    except ValueError:
        raise AssertionError(f"{where} printed no JSON: {ran.output!r}") from None
    if ran.shown is None:
        assert not (isinstance(answer, dict) and "error" in answer), f"{where} answered {answer}"
    else:
        found = differences(shown_answer(ran.shown), answer)
        assert found == [], f"{where} answered {ran.output}"


def http_session(sandbox: Sandbox, server: Served, *, claims: bool = True) -> list[Ran]:
    """Run the HTTP examples in order in one shell against ``server``, checking each answer and claim."""
    terminal = Terminal(
        sandbox.directory, sandbox.env, lambda command: ADDRESS.sub(f"127.0.0.1:{server.port}", command)
    )
    ran: list[Ran] = []
    for block in run_by(HTTP_SESSION):
        for each in terminal.run(block):
            check_answer(each)
            ran.append(each)
        if claims and block.heading in CLAIMS:
            CLAIMS[block.heading](server)
    return ran


def test_the_http_examples_answer_what_the_readme_shows_and_do_what_it_says(
    sandbox: Sandbox, start_exporter: Callable[..., Served], tmp_path: Path
) -> None:
    server = start_exporter(serve_line(), tmp_path / "data")

    ran = http_session(sandbox, server)

    assert set(CLAIMS) <= {each.block.heading for each in ran}
    assert len([each for each in ran if each.shown is not None]) >= 10


def test_the_examples_jobs_outlive_the_retention_purge_of_the_default_plan(
    sandbox: Sandbox, start_exporter: Callable[..., Served], tmp_path: Path
) -> None:
    server = start_exporter(serve_line(), tmp_path / "data")
    http_session(sandbox, server, claims=False)
    # A job 31 days old, beyond the Professional plan's 30: the purge that runs at start takes it.
    finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 31 * 86400))
    old = {"job_id": "job_31_days_old", "connection_name": "Stripe → Postgres", "status": "succeeded"}
    posted = requests.post(
        server.url + "/api/v1/jobs",
        json={**old, "finished_at": finished},
        headers={"Authorization": f"Bearer {sandbox.token}"},
        timeout=30,
    )
    assert posted.status_code == 200, posted.text
    server.stop()

    server = start_exporter(serve_line(), tmp_path / "data")

    wait_until(lambda: server.get("/api/v1/jobs/job_31_days_old").status_code == 404, timeout=30, what="the purge")
    assert [server.get(f"/api/v1/jobs/{job_id}").status_code for job_id in (FIRST, SECOND)] == [200, 200]


def test_the_examples_log_lines_reach_loki_at_their_own_times_and_none_is_dead_lettered(
    sandbox: Sandbox, start_exporter: Callable[..., Served], loki: Loki, tmp_path: Path
) -> None:
    service = "readme-examples"  # the tests sharing this Loki keep apart by service name
    server = start_exporter(
        serve_line(), tmp_path / "data", CALABI_OTLP_LOGS_ENDPOINT=loki.otlp_url, CALABI_SERVICE_NAME=service
    )
    http_session(sandbox, server, claims=False)
    job = server.get(f"/api/v1/jobs/{FIRST}").json()
    query = f'{{service_name="{service}"}} | job_id="{FIRST}" | event="log"'
    now = time.time()

    wait_until(
        lambda: len(loki.entries(query, start=now - 3600, end=now + 60)) >= 3, timeout=60, what="the lines in Loki"
    )
    entries = loki.entries(query, start=now - 3600, end=now + 60)
    start, finish = (
        calendar.timegm(time.strptime(job[key], "%Y-%m-%dT%H:%M:%SZ")) for key in ("started_at", "finished_at")
    )
    assert sorted((entry.ns // 10**9, entry.line) for entry in entries) == [
        (start, "Salesforce API rate limit at 85% — throttling requests"),
        (start, "Syncing stream: Account"),
        (finish, "Stream Account: 4,218 records synced in 101.2s"),
    ]
    assert server.get("/api/v1/logs/dead-letters").json() == {"dead_letters": []}


# ---------------------------------------------------------------- the command lines


@dataclass
class Context:
    """What the command lines of a block share: the user's directory, the exporter they started, S3."""

    sandbox: Sandbox
    start_exporter: Callable[..., Served]
    tmp_path: Path
    s3: MotoServer
    server: Served | None = None
    #: Where the block's ``serve`` listens: known before it starts, for the commands a block runs first.
    port: int = field(default_factory=free_port)

    @property
    def exporter(self) -> Served:
        assert self.server is not None, "no line started the exporter before this one"
        return self.server

    def run(self, line: str, **env: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", line],
            cwd=self.sandbox.directory,
            env={**self.sandbox.env, **env},
            capture_output=True,
            encoding="utf-8",
            timeout=120,
        )
        assert result.returncode == 0, f"`{line}` exited {result.returncode}: {result.stderr}"
        return result

    def the_exporters(self) -> dict[str, str]:
        """The settings pointing a command that reads ``calabi.yml`` at the test's exporter."""
        return {"CALABI_LISTEN": f"127.0.0.1:{self.port}", "CALABI_DATA_DIR": str(self.data_dir)}

    @property
    def data_dir(self) -> Path:
        return self.tmp_path / "data"

    def rewrite(self, line: str) -> str:
        return ADDRESS.sub(f"127.0.0.1:{self.exporter.port}", line)


def bounded(line: str) -> str:
    """The line, stopping after a few seconds when it says nothing of how long to run."""
    command = line.split("  #", 1)[0].rstrip()
    return line if "--duration" in command else f"{command} --duration {DURATION}"


def simulated_connections() -> list[str]:
    return sorted(spec.name for spec in SIMULATED)


def run_serve(line: str, context: Context) -> None:
    context.server = context.start_exporter(line, context.data_dir, port=context.port)


def run_demo(line: str, context: Context) -> None:
    demo = context.tmp_path / "demo"
    context.run(bounded(line), CALABI_LISTEN=f"127.0.0.1:{free_port()}", CALABI_DATA_DIR=str(demo))
    store = Store.sqlite(demo)
    try:
        assert sorted(name for name, _ in store.reads.connection_names()) == simulated_connections()
    finally:
        store.close()


def run_simulate(line: str, context: Context) -> None:
    context.run(bounded(context.rewrite(line)))
    connections = context.exporter.get("/api/v1/connections").json()["connections"]
    assert sorted(c["connection_name"] for c in connections) == simulated_connections()


def run_check_config(line: str, context: Context) -> None:
    printed = json.loads(context.run(line, **context.the_exporters()).stdout)
    assert printed["ingest_tokens"] == ["***"]
    assert (printed["listen"], printed["failure_threshold"], printed["freshness_threshold_seconds"]) == (
        f"127.0.0.1:{context.port}",
        2,
        259200.0,
    )
    overrides = {
        name: (c["failure_threshold"], c["freshness_threshold_seconds"]) for name, c in printed["connections"].items()
    }
    assert overrides == {"Stripe → Postgres": (3, 259200.0), "Zendesk Support → Snowflake": (2, 43200.0)}


def run_healthcheck(line: str, context: Context) -> None:
    context.run(line, **context.the_exporters())


def run_export(line: str, context: Context) -> None:
    s3 = {
        **{name: value for name, value in os.environ.items() if name.startswith("AWS_")},  # the s3 fixture's
        "CALABI_S3_EXPORT__BUCKET": BUCKET,
        "CALABI_S3_EXPORT__ENDPOINT_URL": context.s3.url,
        "CALABI_S3_EXPORT__ADDRESSING_STYLE": "path",
    }
    printed = context.run(line, **context.the_exporters(), **s3).stdout.split()
    keys = [url.removeprefix(f"s3://{BUCKET}/") for url in printed]
    assert keys, "export wrote nothing"
    assert sorted(keys) == sorted(context.s3.objects()), "it prints every key it wrote, and only those"
    assert any("/jobs/dt=" in key for key in keys) and any("/logs/dt=" in key for key in keys), keys


def run_mcp(line: str, context: Context) -> None:
    params = StdioServerParameters(
        command="bash",
        args=["-euo", "pipefail", "-c", context.rewrite(line)],
        env=context.sandbox.env,
        cwd=context.sandbox.directory,
    )

    async def session() -> Any:
        async with Client(params, read_timeout_seconds=30) as client:
            result = await client.call_tool("list_connections", {})
            return result.is_error, result.structured_content

    error, answer = asyncio.run(asyncio.wait_for(session(), timeout=60))
    assert error is False, answer
    assert sorted(c["connection_name"] for c in answer["connections"]) == simulated_connections()


#: How each ``calabi-exporter`` command of the documents runs here.
CLI_RUNNERS: Final[dict[str, Callable[[str, Context], None]]] = {
    "serve": run_serve,
    "demo": run_demo,
    "simulate": run_simulate,
    "check-config": run_check_config,
    "healthcheck": run_healthcheck,
    "export": run_export,
    "mcp": run_mcp,
}


@pytest.mark.slow
def test_the_command_lines_run_as_written(
    sandbox: Sandbox, start_exporter: Callable[..., Served], s3: MotoServer, tmp_path: Path
) -> None:
    for block in run_by(CLI_LINES):
        context = Context(sandbox, start_exporter, tmp_path / f"block-{block.line}", s3)
        context.tmp_path.mkdir()
        ran = []
        for step in steps(block.text):
            name = subcommand(step.command)
            assert name is not None
            CLI_RUNNERS[name](step.command, context)
            ran.append(name)
        assert ran, block.where


# ---------------------------------------------------------------- the other blocks run here


def test_the_settings_the_readme_shows_for_env_are_in_it_commented_out() -> None:
    dotenv = (ROOT / ".env").read_text(encoding="utf-8").splitlines()

    missing = [
        f"{b.where}: {s.command}" for b in run_by(DOTENV) for s in steps(b.text) if f"# {s.command}" not in dotenv
    ]

    assert missing == []


def test_the_commands_run_beside_the_clone_write_what_the_next_step_uses(sandbox: Sandbox, tmp_path: Path) -> None:
    beside = tmp_path / "beside"
    beside.mkdir()
    (beside / "calabi-connect-exporter").symlink_to(ROOT, target_is_directory=True)
    (beside / "my-calabi").mkdir()  # the overlay's directory, made by the step before

    for block in run_by(BESIDE_THE_CLONE):
        for step in steps(block.text):
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", step.command],
                cwd=beside,
                env=sandbox.env,
                capture_output=True,
                encoding="utf-8",
                timeout=120,
            )
            assert result.returncode == 0, f"{block.where}: {result.stderr}"

    rule = yaml.safe_load((beside / "my-calabi" / "prometheusrule.yaml").read_text(encoding="utf-8"))
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]
    assert (rule["kind"], len(alerts)) == ("PrometheusRule", 23)  # CalabiSyncErrorBudgetBurn: a rule per window pair
    assert [a["annotations"]["runbook_url"] for a in alerts] == [
        f"https://wiki.example.com/ops/calabi-runbook#{a['alert'].lower()}" for a in alerts
    ]


# ---------------------------------------------------------------- configuration examples


def yaml_kind(data: Any) -> str:
    """What a YAML example configures: ``prometheus``, ``kustomization``, or else the exporter."""
    if isinstance(data, dict) and data.get("kind") == "Kustomization":
        return "kustomization"  # rendered by tests/integration/test_kubernetes.py
    if isinstance(data, dict) and {"scrape_configs", "rule_files"} & set(data):
        return "prometheus"
    return "exporter"


def exporter_configurations() -> list[Block]:
    found = [b for b in all_blocks() if b.tag in ("yaml", "yml") and yaml_kind(yaml.safe_load(b.text)) == "exporter"]
    assert len(found) >= 2
    return found


def test_every_json_and_yaml_example_parses() -> None:
    for block in all_blocks():
        if block.tag == "json":
            json.loads(block.text)
        elif block.tag in ("yaml", "yml"):
            assert yaml.safe_load(block.text) is not None, block.where


@pytest.mark.parametrize("block", exporter_configurations(), ids=lambda b: b.where)
def test_each_configuration_example_of_the_exporter_loads_as_it_says(block: Block, tmp_path: Path) -> None:
    text = block.text
    # A secret file the example names (on a real host, /run/secrets/...) is made here: the one change.
    for named in re.findall(r"secret_file: *(\S+)", text):
        secret = tmp_path / Path(named).name
        secret.write_text("whsec-0123456789abcdef\n", encoding="utf-8")
        text = text.replace(named, str(secret))
    path = tmp_path / "calabi.yml"
    path.write_text(text, encoding="utf-8")

    config = load_config(path, env={})

    top = set(yaml.safe_load(block.text))
    if "webhooks" in top:
        (hook,) = config.webhooks
        assert (hook.name, hook.url, sorted(hook.statuses), sorted(hook.connections), hook.timeout_seconds) == (
            "ops-bus",
            "https://hooks.example.com/calabi",
            ["failed", "succeeded"],
            [SF],
            10.0,
        )
    if "connections" in top:
        assert (config.listen, config.data_dir, config.ingest_tokens) == (
            "0.0.0.0:9188",
            "/var/lib/calabi-exporter",
            ("change-me-to-a-long-random-token",),
        )
        assert config.connections["Stripe → Postgres"].failure_threshold == 3
        assert config.connections["Zendesk Support → Snowflake"].freshness_threshold_seconds == 43200.0


def test_the_mcp_client_configuration_starts_calabi_exporter_mcp_with_a_url() -> None:
    examples = [json.loads(b.text) for b in all_blocks() if b.tag == "json" and "mcpServers" in b.text]

    assert len(examples) == 1
    (server,) = examples[0]["mcpServers"].values()
    arguments = server["args"]
    assert (Path(server["command"]).name, arguments[0]) == ("calabi-exporter", "mcp")
    assert ADDRESS.search(arguments[arguments.index("--url") + 1]) is not None


#: A line that carries on the query above it: indented, or opening with an operator or a closing bracket.
CONTINUATION: Final = re.compile(r"^(?:\s|[-+*/%^)=!<>]|and\b|or\b|unless\b|on\b|by\b)")


def promql_queries() -> list[tuple[str, str]]:
    """Each PromQL query of the documents, with where it is; ``<connection>`` and ``<job_id>`` filled in."""
    queries: list[tuple[str, str]] = []
    for block in all_blocks():
        if block.tag != "promql":
            continue
        current: list[str] = []
        for line in [*block.text.splitlines(), ""]:
            if line.strip() and not line.lstrip().startswith("#") and current and CONTINUATION.match(line):
                current.append(line)
                continue
            if current:
                queries.append((block.where, "\n".join(current)))
                current = []
            if line.strip() and not line.lstrip().startswith("#"):
                current.append(line)
    return [(where, q.replace("<connection>", SF).replace("<job_id>", "job_01HX4M9QZPKR")) for where, q in queries]


def test_every_promql_example_runs_in_prometheus_over_names_the_exporter_and_the_rules_have(
    exporter_process: Callable[..., Any], prometheus_for: Callable[..., Any], tmp_path: Path
) -> None:
    # Every feature on, so that every family is declared: webhooks, the S3 export and the pollers (to nowhere).
    config = tmp_path / "calabi.yml"
    config.write_text(
        "webhooks: [{name: ops, url: 'http://127.0.0.1:9/hook', secret: 0123456789abcdef}]\n"
        "s3_export: {bucket: archive, endpoint_url: 'http://127.0.0.1:9', region: us-east-1}\n"
        "otlp_logs_endpoint: http://127.0.0.1:9/otlp/v1/logs\n"
        "sources:\n"
        "  airbyte: {api_url: 'http://127.0.0.1:9/v1', client_id: app, client_secret: secret-of-app}\n"
        "  fivetran: {api_url: 'http://127.0.0.1:9', api_key: key, api_secret: secret-of-key}\n"
    )
    exporter = exporter_process(
        env={"CALABI_CONFIG": str(config), "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    )
    finished = time.time() - 600
    record = {"job_id": "j1", "connection_name": SF, "status": "failed", "finished_at": format_time(finished)}
    assert requests.post(exporter.url + "/api/v1/jobs", json=record, timeout=10).status_code == 200
    prometheus = prometheus_for(f"127.0.0.1:{exporter.port}", rule_files=RULE_FILES)
    wait_until(lambda: prometheus.scalar('up{job="calabi-exporter"}') == 1, timeout=60, what="the first scrape")
    exposed = exposed_names(requests.get(exporter.url + "/metrics", timeout=10).text) | {
        rule["record"] for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"] if "record" in rule
    }  # fmt: skip
    queries = promql_queries()

    assert len(queries) >= 30, queries
    for where, query in queries:
        answer = requests.get(prometheus.url + "/api/v1/query", params={"query": query}, timeout=10).json()
        assert answer["status"] == "success", (where, query, answer)
        names = set(re.findall(r"\b(?:calabi_[a-z_]+|connection:[a-z_:0-9]+)\b", query))
        assert names <= exposed, (where, names - exposed)


def exposed_names(text: str) -> set[str]:
    """The series names a scrape declares (``# TYPE`` lines, with or without samples), as PromQL sees them."""
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.update(name + suffix for suffix in suffixes.get(kind, ("",)))  # a counter's is named with _total
    return names


def format_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
