"""The ``calabi-exporter`` command.

``serve`` runs the exporter, ``demo`` runs it with the built-in simulator
posting realistic jobs, ``simulate`` points the simulator at a running exporter,
``check-config`` validates a configuration and prints it, ``healthcheck`` asks
the configured address whether the exporter is ready (a container's health
check), ``export`` sends a time range to S3 now, ``mcp`` serves the AI-agent tools,
``redrive-dead-letters`` queues the log records the receiver refused again.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import LOG_LEVELS, OPTIONS, Config, ConfigError, load_config, optional_url
from .environment import CONFIG_COMMANDS, CONFIG_FILE, MCP_TOKEN, SIMULATOR_TOKEN, VARIABLES
from .preflight import SecretFilter, document, secret_values, warnings
from .store import StoreError, StoreFull, StoreUnavailable

PROG = "calabi-exporter"
EXIT_CONFIG = 2
EXIT_BROKEN_PIPE = 141  # as a shell reports a command that SIGPIPE ended


def _settings_help(command: str) -> str:
    """The epilog of ``command --help``: every setting with its environment variable and default."""
    lines = []
    if command in CONFIG_COMMANDS:
        lines.append("settings (file key, environment variable, default; flags and the environment beat the file):")
        width_key = max(len(o.key) for o in OPTIONS)
        width_env = max(len(o.env) for o in OPTIONS)
        for option in OPTIONS:
            lines.append(f"  {option.key:<{width_key}}  {option.env:<{width_env}}  {option.shown_default}")
        lines.append("  connections, webhooks: in the file only")
    variables = [v for v in VARIABLES if command in v.commands]
    if variables:
        lines.append("environment:")
        lines.extend(f"  {v.name:<24}{v.doc.replace('`', '')}" for v in variables)
    return "\n".join(lines)


def _command(commands: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=_settings_help(name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, help=f"YAML configuration file (or {CONFIG_FILE.name})")
    parser.add_argument("--listen", help="host:port to listen on")
    parser.add_argument("--data-dir", dest="data_dir", help="directory of the embedded store")
    parser.add_argument("--workers", help="worker processes")
    parser.add_argument("--threads", help="threads per worker")
    parser.add_argument("--log-level", dest="log_level", help=", ".join(LOG_LEVELS))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Prometheus exporter for Calabi Connect sync jobs.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = _command(commands, "serve", "run the exporter")
    _config_flags(serve)

    demo = _command(commands, "demo", "run the exporter with the built-in simulator posting demo jobs")
    _config_flags(demo)
    demo.add_argument("--seed", type=int, default=42, help="simulator seed: the same seed posts the same jobs")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: never)")

    simulate = _command(commands, "simulate", "post simulated jobs to a running exporter")
    simulate.add_argument("--url", default="http://127.0.0.1:9188", help="the exporter's base URL")
    simulate.add_argument("--seed", type=int, default=42)
    simulate.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    simulate.add_argument(
        "--token",
        default=os.environ.get(SIMULATOR_TOKEN.name),
        help=f"ingest bearer token (or {SIMULATOR_TOKEN.name})",
    )

    check = _command(
        commands,
        "check-config",
        "check the configuration as serve would (exposure, URLs, the store) and print it as a configuration file",
    )
    _config_flags(check)
    check.add_argument(
        "--offline", action="store_true", help="do not open the store (check a file away from its server)"
    )

    health = _command(
        commands, "healthcheck", "exit 0 when the exporter at the configured listen address is ready, else 1"
    )
    _config_flags(health)

    export = _command(
        commands, "export", "export jobs finished in a time range, with their log lines, to the configured S3 bucket"
    )
    _config_flags(export)
    export.add_argument(
        "--since", required=True, help="start (inclusive): RFC 3339, a UTC date (2026-04-01), or an age (7d, 12h)"
    )
    export.add_argument("--until", default=None, help="end (exclusive), same forms (default: now)")

    redrive = _command(
        commands, "redrive-dead-letters", "queue the dead-lettered log records again, for the log shipper to send"
    )
    _config_flags(redrive)
    redrive.add_argument("--connection", default=None, help="only this connection's (default: every connection's)")

    mcp = _command(
        commands, "mcp", "serve the get_job_status and list_connections tools to AI agents (Model Context Protocol)"
    )
    _config_flags(mcp)
    mcp.add_argument("--url", help="read a running exporter's read API at this URL instead of the store in --data-dir")
    mcp.add_argument(
        "--token", default=os.environ.get(MCP_TOKEN.name), help=f"bearer token for --url (or {MCP_TOKEN.name})"
    )
    mcp.add_argument(
        "--http",
        action="store_true",
        help="serve Streamable HTTP instead of stdio; requires a read token (read_tokens) when any is set",
    )
    mcp.add_argument(
        "--http-listen",
        default="127.0.0.1:9189",
        help="host:port of --http (default 127.0.0.1:9189; path /mcp); another address than loopback needs read_tokens",
    )
    return parser


def _load(args: argparse.Namespace) -> Config:
    path = args.config
    if path is None and os.environ.get(CONFIG_FILE.name):
        path = Path(os.environ[CONFIG_FILE.name])
    flags = {key: getattr(args, key, None) for key in ("listen", "data_dir", "workers", "threads", "log_level")}
    return load_config(path, flags=flags)


def _setup_logging(level: str, config: Config | None = None) -> None:
    """Log lines to stderr, the configuration's secrets masked in every one."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config is not None:
        secrets = SecretFilter(secret_values(config))
        for handler in logging.getLogger().handlers:
            handler.addFilter(secrets)


def _warn(config: Config) -> None:
    for line in warnings(config):
        print(f"{PROG}: warning: {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "simulate":
            from .simulator import run_simulator

            _setup_logging("info")
            run_simulator(args.url, seed=args.seed, duration=args.duration, token=args.token)
            return 0
        config = _load(args)
        _setup_logging(config.log_level, config)
        if args.command == "healthcheck":
            from .healthcheck import check

            problem_line = check(config)
            if problem_line is not None:
                print(f"{PROG}: not ready: {problem_line}", file=sys.stderr)
                return 1
            return 0
        if args.command == "mcp":
            return _mcp(config, args)
        if args.command in ("serve", "check-config"):  # check-config is the preflight of serve
            problem = config.exposure_problem()
            if problem is not None:
                raise problem  # before anything is opened: closed by default
            _warn(config)
        if not (args.command == "check-config" and args.offline):
            _open_store(config, writable=args.command in ("serve", "demo"))
        if args.command == "check-config":
            return _print(json.dumps(document(config), indent=2, ensure_ascii=False))
        if args.command == "export":
            return _export(config, args.since, args.until)
        if args.command == "redrive-dead-letters":
            return _redrive(config, args.connection)
        if args.command == "serve":
            from .server import serve

            serve(config, lambda: _make_app(config))
            return 0
        from .demo import run_demo

        return run_demo(config, argv_config=args.config, seed=args.seed, duration=args.duration)
    except ConfigError as error:
        print(f"{PROG}: config error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreFull as error:
        print(f"{PROG}: the store's disk is full: {error}", file=sys.stderr)
        return 1
    except StoreUnavailable as error:
        print(f"{PROG}: the store is unavailable: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _print(text: str) -> int:
    """Print ``text``; a reader that stops early (``| head``) ends the command quietly, as it would ``cat``."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python flushes stdout again at exit, which would fail once more: point it at nothing first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return 0


def _moment(option: str, value: str, now: float) -> float:
    """``--since``/``--until``: RFC 3339, a UTC date, or an age before now (``7d``)."""
    from .readmodel import BadParameter, parse_moment

    text = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        text += "T00:00:00Z"
    try:
        return parse_moment(option, text, now)
    except BadParameter:
        raise ConfigError(
            option, f"must be RFC 3339, a date like 2026-04-01, or an age like 7d (got {value!r})"
        ) from None


def _export(config: Config, since_text: str, until_text: str | None) -> int:
    import time

    from .s3export import S3Exporter, object_keys
    from .store import Store

    if not config.s3_export_enabled:
        raise ConfigError("s3_export.bucket", "is not set; export needs a bucket")
    now = time.time()
    since = _moment("--since", since_text, now)
    until = now if until_text is None else _moment("--until", until_text, now)
    if until <= since:
        raise ConfigError("--until", "must be after --since")
    store = Store.from_config(config)
    try:
        exporter = S3Exporter(store, config)
        try:
            batches = exporter.export_range(since, until)
        except Exception as error:  # boto3 raises many kinds; the store may fail too
            print(f"{PROG}: export to s3://{config.s3_export_bucket} failed: {error}", file=sys.stderr)
            return 1
    finally:
        store.close()
    if batches:
        for batch in batches:
            for key in object_keys(config.s3_export_prefix, batch):
                print(f"s3://{config.s3_export_bucket}/{key}")
    else:
        print("no finished jobs in that range")
    return 0


def _redrive(config: Config, connection: str | None) -> int:
    """Put dead-lettered log records back in the outbox; a running shipper sends them at its next step."""
    from .store import Store

    store = Store.from_config(config)
    try:
        requeued = store.outbox.redrive(connection)
    finally:
        store.close()
    print(f"{requeued} dead-lettered log records queued again" + (f" ({connection})" if connection else ""))
    return 0


def _mcp(config: Config, args: argparse.Namespace) -> int:
    """Serve the MCP tools over stdio (the default; logs go to stderr) or Streamable HTTP (:mod:`.mcp_http`)."""
    from .mcp_server import HttpSource, ReadSource, StoreSource, build_server
    from .store import Store
    from .store.sqlite import DB_FILENAME

    listen: tuple[str, int] | None = None
    if args.http:
        from .mcp_http import exposure_problem, parse_listen

        listen = parse_listen(args.http_listen)
        problem = exposure_problem(config, args.http_listen)
        if problem is not None:
            raise problem  # before the store is opened: closed by default, as serve
    source: ReadSource
    if args.url:
        try:
            optional_url(args.url)
        except ValueError as error:
            raise ConfigError("--url", str(error)) from None
        source = HttpSource(args.url, args.token)
    else:
        if not (config.data_path / DB_FILENAME).exists():
            raise ConfigError("data_dir", f"no store in {config.data_path}; give the exporter's data_dir, or --url")
        source = StoreSource(Store.from_config(config).reads)
    server = build_server(source)
    if listen is None:
        server.run("stdio")
        return 0
    from .mcp_http import serve

    serve(server, config, *listen)
    return 0


def _open_store(config: Config, *, writable: bool) -> None:
    """Fail before forking workers when the store cannot be opened, with the reason (its secrets masked).

    ``writable``: also write once, for the commands that will write. Opening
    a store whose schema is current writes nothing, so without this a full
    disk would only show at the first request instead of at the start.
    A full disk or a database that stayed unreachable is an outage (status 1:
    the same configuration may work later); any other failure is the
    configuration's (status 2).
    """
    from .store import Store

    try:
        store = Store.from_config(config)
        try:
            if writable:
                store.check_ready()
        finally:
            store.close()
    except (StoreFull, StoreUnavailable) as error:
        raise type(error)(SecretFilter(secret_values(config)).clean(str(error))) from None
    except StoreError as error:
        reason = SecretFilter(secret_values(config)).clean(str(error))
        raise ConfigError("database_url" if config.database_url else "data_dir", reason) from None


def _make_app(config: Config) -> Any:
    from .web import create_app

    return create_app(config, server_worker=True)
