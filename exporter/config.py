"""Configuration: one YAML file, ``CALABI_*`` environment variables, CLI flags.

Later sources win: defaults < file < environment < flags. Every key is declared
once in :data:`OPTIONS` with its default and a sentence for docs/configuration.md, so an
unknown key or a bad value stops start-up with one line naming the key.

Environment variables are the key upper-cased with ``CALABI_`` in front; a dot
in a sectioned key becomes ``__`` (``CALABI_DATA_DIR``). Lists are
comma-separated there.
"""

from __future__ import annotations

import ipaddress
import os
import re
import reprlib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, TypeVar

import yaml

from . import environment as environment_variables
from .model import MAX_SECONDS, STATUSES
from .redact import redact
from .timeutil import format_duration, parse_duration

ENV_PREFIX: Final = "CALABI_"
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key that cannot be used; the message names it.

    One line, bounded (:data:`MAX_ERROR_LINE`) whatever the file holds: a key or
    a value quoted in it is cut short, so a hostile or mistaken file cannot make
    an error line of megabytes.
    """

    def __init__(self, key: str, message: str) -> None:
        key = _cut(key.replace("\n", " "), QUOTED_CHARS)
        super().__init__(_cut(f"{key}: {message}".replace("\n", " "), MAX_ERROR_LINE))
        self.key = key


#: Characters of a value (or key) an error line quotes; longer ones end in "…".
QUOTED_CHARS: Final = 80
#: Characters of a whole configuration error line.
MAX_ERROR_LINE: Final = 1000
_SHORT: Final = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = QUOTED_CHARS
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxset = _SHORT.maxtuple = 4
_SHORT.maxlevel = 3


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quoted(value: Any) -> str:
    """``value`` as an error line quotes it: its ``repr``, credentials masked, at most 80 characters.

    >>> quoted("https://ops:hunter2@bad host/")
    "'https://ops:[REDACTED]@bad host/'"
    >>> quoted(["lol"] * 10**6)
    "['lol', 'lol', 'lol', 'lol', ...]"
    >>> len(quoted("x" * 10**6))
    80
    """
    if isinstance(value, str):
        return _cut(repr(redact(value[: QUOTED_CHARS * 8])), QUOTED_CHARS)
    return _cut(redact(_SHORT.repr(value)), QUOTED_CHARS)


#: The largest integer any option takes unless it says otherwise: fits a 32-bit signed integer
#: (a SQL ``integer``, a C ``int``), so no later conversion or query can fail on it.
MAX_INT: Final = 2**31 - 1


#: The exporter's own log levels (``log_level``), as Python's logging, gunicorn and uvicorn name them;
#: the product's levels of job log lines are :data:`.joblogs.LEVELS`.
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


#: A century: ``retention.days`` beyond it would only overflow the purge's date arithmetic.
MAX_RETENTION_DAYS: Final = 36_500


def _int(minimum: int, maximum: int = MAX_INT) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("must be an integer")
        if isinstance(value, str):
            value = value.strip()
            if not value.lstrip("-").isdigit():
                raise ValueError(f"must be an integer (got {quoted(value)})")
            if len(value) > 20:  # int() of thousands of digits is slow, then refused
                raise ValueError(f"must be at most {maximum} (got {quoted(value)})")
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"must be an integer (got {quoted(value)})")
        if value < minimum:
            raise ValueError(f"must be >= {minimum} (got {quoted(value)})")
        if value > maximum:
            raise ValueError(f"must be at most {maximum} (got {quoted(value)})")
        return value

    parse.__doc__ = f"integer from {minimum} to {maximum}"
    return parse


def _seconds(value: Any) -> float:
    """Seconds: a number (``90``), or a duration in the grammar of every input (``30m``, ``3d``, ``2w``)."""
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                value = parse_duration(text)
            except ValueError:
                raise ValueError(f"must be seconds or a duration, e.g. 259200 or 3d (got {quoted(text)})") from None
    if not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"must be a number of seconds > 0 (got {quoted(value)})")
    if not value <= MAX_SECONDS:  # an int too large for a float, inf, or decades: later arithmetic would fail
        raise ValueError(f"must be at most {MAX_SECONDS} seconds (about 31 years)")
    return float(value)


def _poll_interval(value: Any) -> float:
    """Seconds between polls of a vendor's API: at least 10, so that no configuration hammers it."""
    seconds = _seconds(value)
    if seconds < 10:
        raise ValueError(f"must be at least 10 seconds (got {quoted(value)})")
    return seconds


def _expected_interval(value: Any) -> float:
    """A connection's declared schedule: 0 to learn it from its jobs, else at least a minute."""
    if not isinstance(value, bool) and value in (0, "0"):
        return 0.0
    seconds = _seconds(value)
    if seconds < 60:
        raise ValueError(f"must be 0 (learn it) or at least 60 seconds (got {quoted(value)})")
    return seconds


def _objective(value: Any) -> float:
    """An SLO objective: a share of finished jobs that succeed, from 0.5 to 0.9999."""
    if isinstance(value, bool):
        raise ValueError("must be a number from 0.5 to 0.9999")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number from 0.5 to 0.9999, e.g. 0.99 (got {quoted(value)})") from None
    if number > 0.9999:
        raise ValueError(f"must be at most 0.9999 (got {quoted(value)})")
    if not number >= 0.5:  # NaN too
        raise ValueError(f"must be a number from 0.5 to 0.9999, e.g. 0.99 (got {quoted(value)})")
    return number


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)} (got {quoted(value)})")
        return value.lower()

    parse.__doc__ = " | ".join(choices)
    return parse


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string (got {quoted(value)})")
    return value


def _listen(value: Any) -> str:
    """``host:port``; the host may be empty (all interfaces) or a bracketed IPv6 address."""
    text = _text(value)
    split_listen(text)
    return text


def split_listen(text: str) -> tuple[str, int]:
    """A listen address's host (an IPv6 address without brackets; empty: every interface) and port.

    The one reading of ``listen`` and ``mcp --http-listen``, by serve, the health
    check, the demo and the MCP server alike.

    >>> split_listen("127.0.0.1:9188"), split_listen("[::1]:9189"), split_listen(":9188")
    (('127.0.0.1', 9188), ('::1', 9189), ('', 9188))
    """
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be host:port, e.g. 0.0.0.0:9188 (got {quoted(text)})")
    return host.strip("[]"), int(port)


#: Hosts of a listen address that mean every interface, each with the loopback address that reaches it here.
EVERY_INTERFACE: Final = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "::": "::1"}


def local_address(listen: str) -> tuple[str, int]:
    """The host and port a process on this machine connects to for ``listen``.

    >>> local_address("0.0.0.0:9200"), local_address("[::]:9188"), local_address("10.1.2.3:9188")
    (('127.0.0.1', 9200), ('::1', 9188), ('10.1.2.3', 9188))
    """
    host, port = split_listen(listen)
    return EVERY_INTERFACE.get(host, host), port


def local_url(listen: str) -> str:
    """The URL a process on this machine uses to reach ``listen``.

    >>> local_url("0.0.0.0:9188"), local_url("[::]:9188"), local_url("[fe80::1]:9188")
    ('http://127.0.0.1:9188', 'http://[::1]:9188', 'http://[fe80::1]:9188')
    """
    host, port = local_address(listen)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _optional_text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"must be a string (got {quoted(value)})")
    return value


def _database_url(value: Any) -> str:
    """A ``postgresql://`` connection URL psycopg can read, or empty (SQLite in ``data_dir``)."""
    text = _optional_text(value)
    if not text:
        return text
    if not re.match(r"^postgres(ql)?://[^/?#]", text):
        raise ValueError("must be a postgresql://user:password@host:5432/database URL (empty: SQLite in data_dir)")
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(text)
    except Exception:  # psycopg names the part it cannot read, with the password in it
        raise ValueError("is not a connection URL PostgreSQL's client can read") from None
    _credentials_encoded(parts)
    return text


def _credentials_encoded(parts: Mapping[str, Any]) -> None:
    """Refuse a URL whose user name or password holds a raw ``@`` or ``/``.

    PostgreSQL's client ends the user information at the FIRST ``@`` and the
    host at the first ``/``: ``postgresql://u:se@cret@db/x`` connects to the
    host ``cret@db``, and the tail of the password lands in every connection
    error. Said at start-up, with the fix, the password is never sent anywhere.

    >>> _credentials_encoded({"host": "cret@db", "password": "se"})
    Traceback (most recent call last):
    ...
    ValueError: has an '@' in its user name or password: percent-encode it as %40 (and '/' as %2F)
    """
    host, port = str(parts.get("host", "")), str(parts.get("port", ""))
    if "@" in host:
        raise ValueError("has an '@' in its user name or password: percent-encode it as %40 (and '/' as %2F)")
    if not re.fullmatch(r"[0-9,]*", port):
        raise ValueError("has a port that is not a number; a '/' in the password must be percent-encoded as %2F")


def optional_url(value: Any) -> str:
    """An http(s) URL checked whole at start-up (scheme, host, port), or empty.

    A URL that parses but can never be reached (``http://``, a space in the host,
    port 99999) would otherwise fail every request for ever while the exporter looks
    healthy.

    >>> optional_url("http://minio:9000")
    'http://minio:9000'
    >>> optional_url("http://bad host:9000")
    Traceback (most recent call last):
    ...
    ValueError: must be an http:// or https:// URL with a valid host (got 'http://bad host:9000')
    """
    text = _optional_text(value)
    if not text:
        return text
    problem = f"must be an http:// or https:// URL with a valid host (got {quoted(text)})"
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port  # raises on a port that is not a number from 0 to 65535
    except ValueError:
        raise ValueError(problem) from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not _HOST.match(host) or port == 0:
        raise ValueError(problem)
    return text


#: A DNS name, an IPv4 address or a bracketed IPv6 address (urlsplit drops the brackets).
_HOST: Final = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$|^[0-9A-Fa-f:.]+$"
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (as in ``listen``) is reachable from this machine only.

    >>> [is_loopback(h) for h in ("127.0.0.1", "[::1]", "localhost", "0.0.0.0", "", "10.0.0.5")]
    [True, True, True, False, False, False]
    """
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _key_prefix(value: Any) -> str:
    """An S3 key prefix, without leading or trailing slashes."""
    return _optional_text(value).strip("/")


def _day_divisor(value: Any) -> float:
    seconds = _seconds(value)
    if seconds < 60 or 86400 % seconds:
        raise ValueError(f"must be a whole number of minutes dividing a day, e.g. 1h or 15m (got {quoted(value)})")
    return seconds


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    raise ValueError(f"must be true or false (got {quoted(value)})")


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    """A mapping, or ``name=value,name=value`` in the environment."""
    if isinstance(value, str):
        pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError("must be name=value pairs separated by commas")
        value = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("must be a mapping of header names to string values")
    return tuple(sorted(value.items()))


def _tokens(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of non-empty strings")
    if any(len(v) < 16 for v in value):
        raise ValueError("each token must be at least 16 characters")
    return tuple(value)


def _list(value: Any) -> list[str]:
    """A list of non-empty strings; comma-separated in the environment."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError("must be a list of non-empty strings")
    return [v.strip() for v in value]


def _host_names(value: Any) -> tuple[str, ...]:
    """Host names or IP addresses, without port, lower-cased (as a ``Host`` header names them)."""
    names = [name.lower().strip("[]").rstrip(".") for name in _list(value)]
    bad = [name for name in names if not _HOST.match(name) or (":" in name and not _is_ip(name))]
    if bad:
        raise ValueError(f"each must be a host name or IP address without port or scheme (got {quoted(bad[0])})")
    return tuple(names)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _origins(value: Any) -> tuple[str, ...]:
    """Browser origins, ``scheme://host[:port]``, lower-cased (as an ``Origin`` header names them)."""
    origins = []
    for text in _list(value):
        parts = urllib.parse.urlsplit(text.lower())
        extra = parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc
        if parts.scheme not in ("http", "https") or not parts.netloc or extra:
            raise ValueError(f"each must be an origin like https://agent.example.com (got {quoted(text)})")
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return tuple(origins)


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its key in the file, how a value is read, its default and a sentence for the reference.

    ``secret``: the value is a credential, or a URL that may carry one, masked
    wherever the configuration is shown (``check-config``) and in the
    exporter's log lines (:mod:`.preflight`); a URL keeps all but its credentials.
    """

    key: str
    parse: Callable[[Any], Any]
    default: Any
    doc: str
    secret: bool = False

    @property
    def env(self) -> str:
        """The option's environment variable (:func:`env_name`)."""
        return env_name(self.key)

    @property
    def shown_default(self) -> str:
        """The default as ``--help`` and the reference show it: durations with their unit, empty as ``(empty)``.

        >>> [o.shown_default for o in OPTIONS if o.key in ("allow_unauthenticated", "ingest_tokens", "workers")]
        ['false', '2', '(empty)']
        >>> _BY_KEY["freshness_threshold_seconds"].shown_default
        '259200 (3d)'
        """
        value = self.default
        if value in ("", ()):
            return "(empty)"
        if isinstance(value, bool):
            return str(value).lower()
        if self.key.endswith("_seconds") and format_duration(value) != f"{value:g}s":
            return f"{value:g} ({format_duration(value)})"
        return str(value)


OPTIONS: Final = (
    Option(
        "listen",
        _listen,
        "127.0.0.1:9188",
        "Address and port the HTTP server listens on (loopback by default; another address needs `ingest_tokens` "
        "or `allow_unauthenticated`).",
    ),
    Option(
        "allow_unauthenticated",
        _bool,
        False,
        "Serve on a non-loopback `listen` without `ingest_tokens`: anyone who reaches the port writes and reads.",
    ),
    Option(
        "data_dir",
        _text,
        "./data",
        "Directory of the embedded SQLite store (created if missing, private to the service user).",
    ),
    Option(
        "sqlite_synchronous",
        _choice("full", "normal"),
        "full",
        "`full` fsyncs every write request; `normal` may lose the last requests on power loss, never on a crash.",
    ),
    Option(
        "database_url",
        _database_url,
        "",
        "PostgreSQL 13+ connection URL, e.g. `postgresql://calabi:secret@db:5432/calabi`, for one store shared by "
        "several replicas (see [Running more than one replica](operations.md#running-more-than-one-replica)); "
        "empty: SQLite in `data_dir`. An `@` or `/` in the user name or password must be percent-encoded "
        "(`%40`, `%2F`): PostgreSQL's client would read a raw one as part of the host, so it is refused at "
        "start-up.",
        secret=True,
    ),
    Option(
        "database_pool_size",
        _int(1, 1000),
        10,
        "Connections each worker process keeps open to PostgreSQL (with `database_url`).",
    ),
    Option(
        "database_connect_timeout_seconds",
        _seconds,
        60.0,
        "How long start-up keeps trying a PostgreSQL that does not answer yet (connection refused, timeout, "
        "starting up) before it exits with status 1; a refusal that retrying cannot fix (wrong password, unknown "
        "database, bad `sslmode`) exits at once with status 2.",
    ),
    Option("workers", _int(1, 1024), 2, "Worker processes of the WSGI server (gunicorn)."),
    Option(
        "threads",
        _int(1, 10_000),
        128,
        "Threads per worker process; a client sending its body slowly holds one, so keep more than the slow "
        "clients expected at once (idle threads cost little).",
    ),
    Option("max_body_bytes", _int(1024), 10 * 1024 * 1024, "Largest accepted request body; larger gets HTTP 413."),
    Option(
        "max_body_bytes_in_flight",
        _int(1024),
        40 * 1024 * 1024,
        "Request bodies one worker process takes in at once, in bytes (a chunked body counts as `max_body_bytes`); "
        "each costs four to six times its size in memory while processed. A body that does not fit waits a few "
        "seconds, then gets HTTP 503 with `Retry-After`.",
    ),
    Option(
        "max_clock_skew_seconds",
        _seconds,
        86400.0,
        "How far ahead of the exporter's clock a job's or a log line's time may be; later ones get HTTP 400. "
        "Accepts units: `1d`.",
    ),
    Option(
        "ingest_tokens",
        _tokens,
        (),
        "Bearer tokens accepted on write endpoints (at least 16 characters each; empty: no auth). "
        "Comma-separated in the environment.",
        secret=True,
    ),
    Option(
        "read_tokens",
        _tokens,
        (),
        "Bearer tokens accepted on the read API (`/api/v1/jobs`, `/api/v1/connections`) besides the ingest tokens; "
        "with no token of either kind configured the read API is open. The only tokens `mcp --http` accepts, and "
        "required for it on a non-loopback `--http-listen`.",
        secret=True,
    ),
    Option(
        "metrics_tokens",
        _tokens,
        (),
        "Bearer tokens `/metrics` requires (empty: open, as Prometheus scrapes by default); "
        "the latest error summary, job id and URL of every connection are in its labels. Prometheus sends one "
        "with `authorization: {credentials_file: …}` in its scrape config.",
        secret=True,
    ),
    Option(
        "log_level",
        _choice(*LOG_LEVELS),
        "info",
        "The exporter's own log level: `debug`, `info`, `warning` or `error`; `debug` adds the access log, with "
        "`?token=` and other credentials masked.",
    ),
    Option(
        "failure_threshold",
        _int(1, 1_000_000),
        2,
        "Consecutive failed jobs before a connection pages (`calabi_sync_failure_threshold`).",
    ),
    Option(
        "freshness_threshold_seconds",
        _seconds,
        259200.0,
        "Longest tolerated time without a successful sync (`calabi_sync_freshness_threshold_seconds`); "
        "accepts units: `3d`, `12h`.",
    ),
    Option(
        "stuck_floor_seconds",
        _seconds,
        3600.0,
        "A running job counts as stuck after three times its connection's average duration, and never before "
        "this (`calabi_sync_stuck_floor_seconds`); accepts units: `1h`.",
    ),
    Option(
        "pending_threshold_seconds",
        _seconds,
        1800.0,
        "Longest tolerated wait of a pending job for a worker slot (`calabi_sync_pending_threshold_seconds`); "
        "accepts units: `30m`.",
    ),
    Option(
        "expected_interval_seconds",
        _expected_interval,
        0.0,
        "The interval between a connection's successful syncs, declared (`calabi_sync_expected_interval_seconds`;"
        " overdue after it plus half of it, at least an hour more: `calabi_sync_overdue_threshold_seconds`);"
        " 0: the schedule the platform reports, else the one learned from the connection's newest successes."
        " Meant per connection (`connections.<name>.expected_interval_seconds`); accepts units: `1h`, `1d`.",
    ),
    Option(
        "slo_objective",
        _objective,
        0.99,
        "Share of a connection's finished jobs (cancelled left out) that should succeed over 30 days "
        "(`calabi_sync_slo_objective`): the error budget the `CalabiSyncErrorBudgetBurn` alerts spend, from 0.5 "
        "to 0.9999.",
    ),
    Option(
        "otlp_logs_endpoint",
        optional_url,
        "",
        "OTLP/HTTP logs URL job logs are shipped to, e.g. `http://loki:3100/otlp/v1/logs` (empty: no shipping).",
        secret=True,  # user information and query tokens (?api_key=) are credentials
    ),
    Option(
        "otlp_headers",
        _headers,
        (),
        "Extra HTTP headers for the OTLP endpoint, e.g. `X-Scope-OrgID` or `Authorization`; "
        "`name=value,name=value` in the environment.",
        secret=True,
    ),
    Option(
        "otlp_timeout_seconds",
        _seconds,
        10.0,
        "Time limit of one export request, from connecting to the last byte of the answer.",
    ),
    Option("otlp_batch_size", _int(1, 100_000), 1000, "Log records per export request."),
    Option(
        "otlp_max_request_bytes",
        _int(65536),
        3 * 1024 * 1024,
        "Largest export request (encoded OTLP protobuf), below the receiver's limit (Loki: 4 MiB, "
        "`grpc_server_max_recv_msg_size`); a request the receiver finds too large is split in halves.",
    ),
    Option(
        "log_refused_retry_seconds",
        _seconds,
        3600.0,
        "How long a 4xx the receiver does not explain (a proxy's 400, 401, 403, 404) is retried before the "
        "records it refuses are dead-lettered; refusals Loki explains (too old, invalid) are final at once.",
    ),
    Option(
        "log_max_age_seconds",
        _seconds,
        601200.0,
        "Lines older than this are not sent but dead-lettered (Loki rejects lines older than its "
        "`reject_old_samples_max_age`, 7 days by default); accepts units: `6d`.",
    ),
    Option(
        "log_out_of_order_window_seconds",
        _seconds,
        3600.0,
        "Loki's per-stream out-of-order window (`max_chunk_age / 2`, one hour by default): lines older than "
        "five sixths of it are sent at that age, with their true time in `log_time`; accepts units: `1h`.",
    ),
    Option("service_name", _text, "calabi-connect", "`service.name` of shipped log records."),
    Option("service_namespace", _optional_text, "", "`service.namespace` of shipped log records (empty: unset)."),
    Option(
        "deployment_environment",
        _optional_text,
        "",
        "`deployment.environment` of shipped log records, e.g. `production` (empty: unset).",
    ),
    Option(
        "service_instance_id",
        _optional_text,
        "",
        "`service.instance.id` of shipped log records (empty: this host's name), stable across restarts.",
    ),
    Option("debug_logs", _bool, False, "Ship DEBUG lines too (per connection: `connections.<name>.debug_logs`)."),
    Option(
        "per_stream_metrics",
        _bool,
        True,
        "Expose the per-stream series (`calabi_sync_stream_*`); per connection: "
        "`connections.<name>.per_stream_metrics`; `false` keeps a wide connection's hundreds of tables out of "
        "Prometheus.",
    ),
    Option(
        "limits.max_connections",
        _int(1),
        10_000,
        "Connections with their own series; jobs of later ones are stored and counted under "
        '`connection="__overflow__"`.',
    ),
    Option(
        "limits.max_streams_per_connection",
        _int(1),
        100,
        'Streams of a connection with their own series; later ones are counted under `stream="__overflow__"`.',
    ),
    Option(
        "limits.new_connections_per_hour",
        _int(0),
        1000,
        "Connections one ingest token may make known per clock hour, on `/api/v1/jobs` and `/webhooks/calabi` "
        "together (0: no limit); a job of one more is refused with 429 naming `connection_name`.",
    ),
    Option(
        "retention.plan",
        _choice("professional", "enterprise"),
        "professional",
        "Job history kept: `professional` 30 days, `enterprise` 90 days; older finished jobs are purged "
        "(counters keep their totals).",
    ),
    Option(
        "retention.days",
        _int(0, MAX_RETENTION_DAYS),
        0,
        "Days of job history kept, overriding the plan (0: the plan's; at most 36500).",
    ),
    Option(
        "retention.unfinished_job_max_age_seconds",
        _seconds,
        604800.0,
        "A job still pending or running that no record has changed for this long is abandoned: the purge "
        "deletes it (and forgets its connection if nothing else is left of it); accepts units: `7d`.",
    ),
    Option(
        "s3_export.bucket",
        _optional_text,
        "",
        "S3 bucket finished jobs and their log lines are exported to (empty: no export). Credentials come from "
        "the standard AWS chain (environment, shared files, instance role). With export on, nothing is purged "
        "before it is exported.",
    ),
    Option("s3_export.prefix", _key_prefix, "calabi-connect", "Key prefix of exported objects (may be empty)."),
    Option("s3_export.region", _optional_text, "", "AWS region of the bucket (empty: the AWS chain's)."),
    Option(
        "s3_export.endpoint_url",
        optional_url,
        "",
        "Endpoint of an S3-compatible store such as MinIO, e.g. `http://minio:9000` (empty: AWS).",
        secret=True,  # user information and query tokens are credentials
    ),
    Option(
        "s3_export.addressing_style",
        _choice("auto", "path", "virtual"),
        "auto",
        "Bucket addressing; MinIO without a domain needs `path`.",
    ),
    Option(
        "s3_export.batch_seconds",
        _day_divisor,
        3600.0,
        "Jobs are exported in objects covering this much finish time (must divide a day); accepts units: `1h`.",
    ),
    Option(
        "sources.airbyte.api_url",
        optional_url,
        "https://api.airbyte.com/v1",
        "Airbyte's public API the Airbyte poller reads, e.g. `http://airbyte:8000/api/public/v1` for a "
        "self-managed Airbyte.",
        secret=True,  # user information and query tokens are credentials
    ),
    Option(
        "sources.airbyte.client_id",
        _optional_text,
        "",
        "Client id of the Airbyte application the poller gets its access token with. Empty: no Airbyte poller "
        "(the webhook alone).",
    ),
    Option(
        "sources.airbyte.client_secret",
        _optional_text,
        "",
        "Client secret of that Airbyte application.",
        secret=True,
    ),
    Option(
        "sources.airbyte.config_api_url",
        optional_url,
        "",
        "Airbyte's configuration API, e.g. `http://airbyte:8000/api`: when set, the poller reads each finished "
        "job's streams, start and failure from it (`POST /v1/jobs/get`, with the same token). Empty: the public "
        "API's totals only.",
        secret=True,  # user information and query tokens are credentials
    ),
    Option(
        "sources.airbyte.poll_interval_seconds",
        _poll_interval,
        60.0,
        "Seconds between polls of Airbyte's jobs; accepts units: `1m`.",
    ),
    Option(
        "sources.airbyte.backfill_seconds",
        _seconds,
        86400.0,
        "How far back the Airbyte poller's first poll reads jobs (later polls go on from where it was); accepts "
        "units: `7d`.",
    ),
    Option(
        "sources.fivetran.api_url",
        optional_url,
        "https://api.fivetran.com",
        "Fivetran's REST API the Fivetran poller reads.",
        secret=True,  # user information and query tokens are credentials
    ),
    Option(
        "sources.fivetran.api_key",
        _optional_text,
        "",
        "Key of the Fivetran API key the poller reads connections with. Empty: no Fivetran poller.",
        secret=True,  # half of the credential: masked with the other
    ),
    Option(
        "sources.fivetran.api_secret",
        _optional_text,
        "",
        "Secret of that Fivetran API key.",
        secret=True,
    ),
    Option(
        "sources.fivetran.poll_interval_seconds",
        _poll_interval,
        300.0,
        "Seconds between polls of Fivetran's connections; accepts units: `5m`.",
    ),
    Option(
        "sources.fivetran.webhook_secret",
        _optional_text,
        "",
        "The secret of the Fivetran webhook that posts to `/webhooks/fivetran`: each delivery must be signed with "
        "it (`X-Fivetran-Signature-256`). Empty: the endpoint refuses every delivery.",
        secret=True,
    ),
    Option(
        "mcp.allowed_hosts",
        _host_names,
        (),
        "Host names `calabi-exporter mcp --http` answers to besides loopback ones and its `--http-listen` address, "
        "e.g. `calabi-mcp.internal`; another `Host` gets HTTP 403 (DNS rebinding). Comma-separated in the "
        "environment.",
    ),
    Option(
        "mcp.allowed_origins",
        _origins,
        (),
        "Browser origins `calabi-exporter mcp --http` accepts besides loopback ones, e.g. "
        "`https://agent.example.com`; a request with another `Origin` gets HTTP 403 (one without `Origin` is no "
        "browser's and is accepted). Comma-separated in the environment.",
    ),
)
PLAN_DAYS: Final = {"professional": 30, "enterprise": 90}


def env_name(key: str) -> str:
    """The environment variable of an option: ``retention.plan`` is ``CALABI_RETENTION__PLAN``."""
    return ENV_PREFIX + key.upper().replace(".", "__")


_BY_KEY: Final = {o.key: o for o in OPTIONS}
#: Every section a dotted key lies in: ``sources.fivetran.webhook_secret`` is in ``sources`` and ``sources.fivetran``.
_SECTIONS: Final = frozenset(
    ".".join(parts[:depth]) for o in OPTIONS if len(parts := o.key.split(".")) > 1 for depth in range(1, len(parts))
)


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Per-connection overrides of the alerting thresholds: options of :data:`OPTIONS`, ``None`` when not given.

    Each field is the option of its name, typed as the option's parser returns
    or ``None`` (a test holds the names and types to :data:`OPTIONS`).
    """

    failure_threshold: int | None = None
    freshness_threshold_seconds: float | None = None
    stuck_floor_seconds: float | None = None
    pending_threshold_seconds: float | None = None
    expected_interval_seconds: float | None = None
    slo_objective: float | None = None
    debug_logs: bool | None = None
    per_stream_metrics: bool | None = None


#: The keys a connection may override (``connections.<name>.<key>``), in the order they are shown.
CONNECTION_KEYS: Final = tuple(f.name for f in fields(ConnectionSettings))


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """An endpoint every job status change is POSTed to, signed with its secret."""

    name: str
    url: str
    secret: str = field(repr=False)
    statuses: frozenset[str] = frozenset()  # empty: every status
    connections: frozenset[str] = frozenset()  # empty: every connection
    timeout_seconds: float = 10.0
    secret_file: str = ""  # where the secret was read, when it came from a file


def _default(key: str) -> Any:
    """An option's default: declared once, in :data:`OPTIONS`."""
    return _BY_KEY[key].default


@dataclass(frozen=True, slots=True)
class Config:
    """The exporter's whole configuration, validated.

    One field per option of :data:`OPTIONS`, in its order, named as its key with
    ``.`` as ``_``, typed as its parser returns, defaulting to its default: written
    out (not generated) so that mypy checks every use of a field by its type; a
    test holds the names, the order, the types and the defaults to :data:`OPTIONS`,
    so a new option is its row there and one line here.
    """

    listen: str = _default("listen")
    allow_unauthenticated: bool = _default("allow_unauthenticated")
    data_dir: str = _default("data_dir")
    sqlite_synchronous: str = _default("sqlite_synchronous")
    database_url: str = _default("database_url")
    database_pool_size: int = _default("database_pool_size")
    database_connect_timeout_seconds: float = _default("database_connect_timeout_seconds")
    workers: int = _default("workers")
    threads: int = _default("threads")
    max_body_bytes: int = _default("max_body_bytes")
    max_body_bytes_in_flight: int = _default("max_body_bytes_in_flight")
    max_clock_skew_seconds: float = _default("max_clock_skew_seconds")
    ingest_tokens: tuple[str, ...] = _default("ingest_tokens")
    read_tokens: tuple[str, ...] = _default("read_tokens")
    metrics_tokens: tuple[str, ...] = _default("metrics_tokens")
    log_level: str = _default("log_level")
    failure_threshold: int = _default("failure_threshold")
    freshness_threshold_seconds: float = _default("freshness_threshold_seconds")
    stuck_floor_seconds: float = _default("stuck_floor_seconds")
    pending_threshold_seconds: float = _default("pending_threshold_seconds")
    expected_interval_seconds: float = _default("expected_interval_seconds")
    slo_objective: float = _default("slo_objective")
    otlp_logs_endpoint: str = _default("otlp_logs_endpoint")
    otlp_headers: tuple[tuple[str, str], ...] = _default("otlp_headers")
    otlp_timeout_seconds: float = _default("otlp_timeout_seconds")
    otlp_batch_size: int = _default("otlp_batch_size")
    otlp_max_request_bytes: int = _default("otlp_max_request_bytes")
    log_refused_retry_seconds: float = _default("log_refused_retry_seconds")
    log_max_age_seconds: float = _default("log_max_age_seconds")
    log_out_of_order_window_seconds: float = _default("log_out_of_order_window_seconds")
    service_name: str = _default("service_name")
    service_namespace: str = _default("service_namespace")
    deployment_environment: str = _default("deployment_environment")
    service_instance_id: str = _default("service_instance_id")
    debug_logs: bool = _default("debug_logs")
    per_stream_metrics: bool = _default("per_stream_metrics")
    limits_max_connections: int = _default("limits.max_connections")
    limits_max_streams_per_connection: int = _default("limits.max_streams_per_connection")
    limits_new_connections_per_hour: int = _default("limits.new_connections_per_hour")
    retention_plan: str = _default("retention.plan")
    retention_days: int = _default("retention.days")
    retention_unfinished_job_max_age_seconds: float = _default("retention.unfinished_job_max_age_seconds")
    s3_export_bucket: str = _default("s3_export.bucket")
    s3_export_prefix: str = _default("s3_export.prefix")
    s3_export_region: str = _default("s3_export.region")
    s3_export_endpoint_url: str = _default("s3_export.endpoint_url")
    s3_export_addressing_style: str = _default("s3_export.addressing_style")
    s3_export_batch_seconds: float = _default("s3_export.batch_seconds")
    sources_airbyte_api_url: str = _default("sources.airbyte.api_url")
    sources_airbyte_client_id: str = _default("sources.airbyte.client_id")
    sources_airbyte_client_secret: str = _default("sources.airbyte.client_secret")
    sources_airbyte_config_api_url: str = _default("sources.airbyte.config_api_url")
    sources_airbyte_poll_interval_seconds: float = _default("sources.airbyte.poll_interval_seconds")
    sources_airbyte_backfill_seconds: float = _default("sources.airbyte.backfill_seconds")
    sources_fivetran_api_url: str = _default("sources.fivetran.api_url")
    sources_fivetran_api_key: str = _default("sources.fivetran.api_key")
    sources_fivetran_api_secret: str = _default("sources.fivetran.api_secret")
    sources_fivetran_poll_interval_seconds: float = _default("sources.fivetran.poll_interval_seconds")
    sources_fivetran_webhook_secret: str = _default("sources.fivetran.webhook_secret")
    mcp_allowed_hosts: tuple[str, ...] = _default("mcp.allowed_hosts")
    mcp_allowed_origins: tuple[str, ...] = _default("mcp.allowed_origins")
    connections: Mapping[str, ConnectionSettings] = field(default_factory=dict)
    webhooks: tuple[WebhookEndpoint, ...] = ()

    def exposure_problem(self) -> ConfigError | None:
        """Why serving as configured would open a write port to anyone, if it would.

        Closed by default: a loopback ``listen`` is private to the machine; any
        other address needs ``ingest_tokens`` or an explicit ``allow_unauthenticated``.
        """
        if self.ingest_tokens or self.allow_unauthenticated or is_loopback(split_listen(self.listen)[0]):
            return None
        return ConfigError(
            "ingest_tokens",
            f"required when listen ({self.listen}) is not a loopback address; "
            "or set allow_unauthenticated: true to serve it open",
        )

    @property
    def retention_seconds(self) -> float:
        """How long finished jobs are kept: ``retention.days``, or the plan's 30 / 90 days."""
        return float(self.retention_days or PLAN_DAYS[self.retention_plan]) * 86400

    def ships_debug(self, connection: str) -> bool:
        """Whether DEBUG lines of ``connection`` are shipped."""
        override = self.connections.get(connection, ConnectionSettings()).debug_logs
        return self.debug_logs if override is None else override

    def streams_exposed(self, connection: str) -> bool:
        """Whether ``connection``'s per-stream series are exposed."""
        override = self.connections.get(connection, ConnectionSettings()).per_stream_metrics
        return self.per_stream_metrics if override is None else override

    @property
    def pollers(self) -> tuple[str, ...]:
        """The sources whose API is polled: those given credentials."""
        polled = (("airbyte", self.sources_airbyte_client_id), ("fivetran", self.sources_fivetran_api_key))
        return tuple(source for source, credential in polled if credential)

    @property
    def s3_export_enabled(self) -> bool:
        return bool(self.s3_export_bucket)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


def _parse(key: str, value: Any) -> Any:
    try:
        return _BY_KEY[key].parse(value)
    except ValueError as error:
        raise ConfigError(key, str(error)) from None


def _connections(value: Any) -> dict[str, ConnectionSettings]:
    if not isinstance(value, dict):
        raise ConfigError("connections", "must be a mapping of connection name to settings")
    out: dict[str, ConnectionSettings] = {}
    for name, settings in value.items():
        where = f"connections.{name}"
        if not isinstance(settings, dict):
            raise ConfigError(where, "must be a mapping")
        unknown = sorted(set(settings) - set(CONNECTION_KEYS))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}", "unknown key")
        parsed: dict[str, Any] = {}
        for key, raw in settings.items():
            try:
                parsed[key] = _BY_KEY[key].parse(raw)
            except ValueError as error:
                raise ConfigError(f"{where}.{key}", str(error)) from None
        out[str(name)] = ConnectionSettings(**parsed)
    return out


WEBHOOK_KEYS: Final = ("name", "url", "secret", "secret_file", "statuses", "connections", "timeout_seconds")
_ENDPOINT_NAME: Final = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _strings(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of non-empty strings")
    return frozenset(value)


def _webhook(index: int, value: Any, base: Path | None) -> WebhookEndpoint:
    where = f"webhooks[{index}]"
    if not isinstance(value, dict):
        raise ConfigError(where, "must be a mapping with name, url and secret_file (or secret)")
    unknown = sorted(set(value) - set(WEBHOOK_KEYS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "unknown key")
    for key in ("name", "url"):
        if key not in value:
            raise ConfigError(f"{where}.{key}", "is required")
    name = value["name"]
    if not isinstance(name, str) or not _ENDPOINT_NAME.match(name):
        raise ConfigError(f"{where}.name", f"must be 1-64 letters, digits, '.', '_' or '-' (got {quoted(name)})")
    try:
        url = optional_url(value["url"])
        if not url:
            raise ValueError("must be an http:// or https:// URL")
    except ValueError as error:
        raise ConfigError(f"{where}.url", str(error)) from None
    if ("secret" in value) == ("secret_file" in value):
        raise ConfigError(f"{where}.secret_file", "give exactly one of secret_file and secret")
    if "secret_file" in value:
        secret_path = Path(_parse_or_fail(f"{where}.secret_file", _text, value["secret_file"]))
        if base is not None and not secret_path.is_absolute():
            secret_path = base / secret_path
        try:
            secret = secret_path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(f"{where}.secret_file", f"cannot read {secret_path}: {error.strerror}") from None
        secret_key, secret_file = f"{where}.secret_file", str(secret_path.absolute())
    else:
        secret, secret_key, secret_file = value["secret"], f"{where}.secret", ""
    if not isinstance(secret, str) or len(secret) < 16:
        raise ConfigError(secret_key, "the secret must be at least 16 characters")
    statuses = _parse_or_fail(f"{where}.statuses", _strings, value.get("statuses", []))
    bad = sorted(statuses - set(STATUSES))
    if bad:
        raise ConfigError(f"{where}.statuses", f"unknown status {quoted(bad[0])}; use {', '.join(STATUSES)}")
    return WebhookEndpoint(
        name=name,
        url=url,
        secret=secret,
        statuses=statuses,
        connections=_parse_or_fail(f"{where}.connections", _strings, value.get("connections", [])),
        timeout_seconds=_parse_or_fail(f"{where}.timeout_seconds", _seconds, value.get("timeout_seconds", 10.0)),
        secret_file=secret_file,
    )


def _parse_or_fail(where: str, parse: Callable[[Any], T], value: Any) -> T:
    try:
        return parse(value)
    except ValueError as error:
        raise ConfigError(where, str(error)) from None


def _webhooks(value: Any, base: Path | None) -> tuple[WebhookEndpoint, ...]:
    if not isinstance(value, list):
        raise ConfigError("webhooks", "must be a list of endpoints")
    endpoints = tuple(_webhook(index, item, base) for index, item in enumerate(value))
    names = [e.name for e in endpoints]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ConfigError(f"webhooks[{index}].name", f"{quoted(name)} is used twice")
    return endpoints


#: Values YAML aliases (``*name``) may add to a file by repeating what an anchor (``&name``) holds.
MAX_ALIASED_VALUES: Final = 10_000


class _AliasBomb(yaml.YAMLError):
    """A document whose aliases would repeat more than :data:`MAX_ALIASED_VALUES` values, or itself."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a document whose aliases expand it beyond a bound.

    Aliases are shared, not copied, while a file is read; but quoting, checking
    or printing a value walks it expanded, and nine anchors of nine aliases each
    make a few hundred bytes worth hundreds of megabytes (the "billion laughs").
    A few anchors for repeated settings stay well inside the bound.
    """

    def compose_document(self) -> yaml.Node | None:
        node: yaml.Node | None = super().compose_document()
        if node is not None and _aliased_values(node) > MAX_ALIASED_VALUES:
            raise _AliasBomb(f"aliases repeat more than {MAX_ALIASED_VALUES} values")
        return node


def _aliased_values(root: yaml.Node) -> int:
    """How many values aliases add to ``root`` when expanded: expanded size minus distinct nodes.

    Counted with each node's expanded size computed once (so in linear time,
    however large the expansion) and capped far beyond any real file; an alias
    inside its own anchor counts as unbounded.
    """
    unbounded = 10**12
    sizes: dict[int, int] = {}
    ancestors: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        children = _children(node)
        if expanded:
            ancestors.discard(id(node))
            sizes[id(node)] = min(1 + sum(sizes[id(child)] for child in children), unbounded)
        elif id(node) in ancestors:
            return unbounded
        elif id(node) not in sizes:
            ancestors.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)] - len(sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def read_file(path: Path) -> dict[str, Any]:
    """The YAML file's top-level mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError("config", f"cannot read {path}: {error.strerror}") from None
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader: plain data only
    except _AliasBomb as error:
        raise ConfigError("config", f"{path}: YAML {error}; write the values out") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("config", f"{path} is not valid YAML{where}") from None
    except RecursionError:
        raise ConfigError("config", f"{path} is not valid YAML: nested too deeply") from None
    except ValueError:  # an integer of thousands of digits
        raise ConfigError("config", f"{path} is not valid YAML: a number too large to read") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path} must hold a mapping of keys")
    return data


_BY_ENV: Final = {o.env: o for o in OPTIONS}


def settings_from_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """The options the environment sets, by key; other ``CALABI_*`` variables are checked, not used.

    A variable another command reads (:data:`.environment.VARIABLES`) or one
    Kubernetes injects for a Service passes; any other ``CALABI_*`` variable
    stops start-up, naming the known variable it most likely misspells.
    """
    settings: dict[str, str] = {}
    for name, raw in environment.items():
        if not name.startswith(ENV_PREFIX):
            continue
        option = _BY_ENV.get(name)
        if option is not None:
            settings[option.key] = raw
        elif name not in environment_variables.BY_NAME and not environment_variables.is_service_link(name, raw):
            guess = environment_variables.closest(name, [*_BY_ENV, *environment_variables.BY_NAME])
            hint = f"; did you mean {guess}?" if guess else " (see calabi-exporter serve --help)"
            raise ConfigError(name, f"unknown setting{hint}")
    return settings


def _section(section: str, raw: Mapping[Any, Any]) -> dict[str, Any]:
    """The options a section of the file sets, by key, its sections within included."""
    values: dict[str, Any] = {}
    for name, value in raw.items():
        nested = f"{section}.{name}"
        if nested in _SECTIONS and isinstance(value, dict):
            values.update(_section(nested, value))
        elif nested in _BY_KEY:
            values[nested] = _parse(nested, value)
        else:
            raise ConfigError(nested, "unknown key")
    return values


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration from the file, the environment and the flags."""
    values: dict[str, Any] = {o.key: o.default for o in OPTIONS}
    connections: dict[str, ConnectionSettings] = {}
    webhooks: tuple[WebhookEndpoint, ...] = ()

    file_values = read_file(path) if path is not None else {}
    for key, raw in file_values.items():
        if key == "connections":
            connections = _connections(raw if raw is not None else {})
        elif key == "webhooks":
            webhooks = _webhooks(raw if raw is not None else [], path.parent if path is not None else None)
        elif key in _SECTIONS and isinstance(raw, dict):
            values.update(_section(str(key), raw))
        elif key in _BY_KEY:
            values[key] = _parse(key, raw)
        else:
            raise ConfigError(str(key), "unknown key")

    for key, raw in settings_from_environment(os.environ if env is None else env).items():
        values[key] = _parse(key, raw)

    for key, raw in (flags or {}).items():
        if raw is not None:
            values[key] = _parse(key, raw)

    for given, needed in _PAIRS:
        if bool(values[given]) != bool(values[needed]):
            missing = needed if values[given] else given
            raise ConfigError(missing, f"is required with {given if missing == needed else needed}")
    _check_poller_urls(values)
    return Config(
        **{key.replace(".", "_"): value for key, value in values.items()}, connections=connections, webhooks=webhooks
    )


def _check_poller_urls(values: Mapping[str, Any]) -> None:
    """A poller's URLs: its API's given, and none holding credentials (requests would send those instead
    of the poller's own, and every poll would be refused)."""
    for credential, required, optional in _POLLER_URLS:
        if not values[credential]:
            continue
        if not values[required]:
            raise ConfigError(required, f"is required with {credential}")
        for key in (required, *optional):
            if "@" in urllib.parse.urlsplit(values[key]).netloc:
                raise ConfigError(key, f"must not hold credentials: give them as {credential} and its secret")


#: Each poller's credential, the URL it needs and the URLs it may have.
_POLLER_URLS: Final = (
    ("sources.airbyte.client_id", "sources.airbyte.api_url", ("sources.airbyte.config_api_url",)),
    ("sources.fivetran.api_key", "sources.fivetran.api_url", ()),
)
#: Options that make sense only together: a poller's credentials.
_PAIRS: Final = (
    ("sources.airbyte.client_id", "sources.airbyte.client_secret"),
    ("sources.fivetran.api_key", "sources.fivetran.api_secret"),
)
