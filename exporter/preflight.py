"""What ``check-config`` shows and checks: the configuration ``serve`` would run with.

The document is in the nested shape a configuration file takes (sections as
mappings, per-connection settings under ``connections``), so it can be saved
and loaded again; every value is the effective one, each connection's too. A
value marked ``secret`` (:attr:`.config.Option.secret`, a webhook's secret) is
masked: tokens and header values become ``***``, a URL keeps all but its
credentials (:func:`.redact.redact`: its password, a token as its user name, and
secret-looking query parameters). Log lines are masked the same way
(:class:`SecretFilter`).
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any, Final

from .config import CONNECTION_KEYS, OPTIONS, Config, Option
from .redact import redact, url_secrets

MASK: Final = "***"
#: The path every OTLP/HTTP logs receiver serves: ``/v1/logs`` (an OpenTelemetry Collector),
#: under a prefix on Loki (``/otlp/v1/logs``) and on hosted gateways.
OTLP_LOGS_PATH: Final = "/v1/logs"


def field_name(key: str) -> str:
    """The :class:`.config.Config` field of an option key: ``retention.plan`` is ``retention_plan``."""
    return key.replace(".", "_")


def masked(option: Option, value: Any) -> Any:
    """``value`` as shown: a secret option's value masked, the others as they are (made JSON-friendly).

    >>> from .config import OPTIONS
    >>> options = {o.key: o for o in OPTIONS}
    >>> masked(options["ingest_tokens"], ("a" * 16, "b" * 16))
    ['***', '***']
    >>> masked(options["database_url"], "postgresql://calabi:s3cret@db:5432/calabi")
    'postgresql://calabi:[REDACTED]@db:5432/calabi'
    >>> masked(options["otlp_headers"], (("X-Scope-OrgID", "team-a"),))
    {'X-Scope-OrgID': '***'}
    >>> masked(options["otlp_logs_endpoint"], "https://gw.example.com/otlp/v1/logs?api_key=k-0123")
    'https://gw.example.com/otlp/v1/logs?api_key=[REDACTED]'
    """
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return {name: MASK if option.secret else text for name, text in value}
    if isinstance(value, tuple):
        return [MASK if option.secret else item for item in value]
    if option.secret and isinstance(value, str):
        return redact(value) if "://" in value else (MASK if value else value)
    return value


def document(config: Config) -> dict[str, Any]:
    """The effective configuration as a configuration file would hold it, secrets masked."""
    out: dict[str, Any] = {}
    for option in OPTIONS:
        value = masked(option, getattr(config, field_name(option.key)))
        if option.key == "otlp_headers" and not value:
            value = {}  # a mapping in the file, even when empty
        *sections, name = option.key.split(".")
        place = out
        for section in sections:  # sources.fivetran.webhook_secret sits in sources: {fivetran: {...}}
            place = place.setdefault(section, {})
        place[name] = value
    by_key = {o.key: o for o in OPTIONS}
    out["connections"] = {
        name: {key: masked(by_key[key], effective(config, name, key)) for key in CONNECTION_KEYS}
        for name in sorted(config.connections)
    }
    out["webhooks"] = [
        {
            "name": endpoint.name,
            "url": redact(endpoint.url),
            **({"secret_file": endpoint.secret_file} if endpoint.secret_file else {"secret": MASK}),
            "statuses": sorted(endpoint.statuses),
            "connections": sorted(endpoint.connections),
            "timeout_seconds": endpoint.timeout_seconds,
        }
        for endpoint in config.webhooks
    ]
    return out


def effective(config: Config, connection: str, key: str) -> Any:
    """The value of per-connection setting ``key`` for ``connection``: its override, else the global one."""
    override = getattr(config.connections[connection], key)
    return getattr(config, key) if override is None else override


def warnings(config: Config) -> list[str]:
    """What is valid but most likely not what was meant, one line each."""
    found = []
    endpoint = config.otlp_logs_endpoint
    if endpoint:
        path = urllib.parse.urlsplit(endpoint).path.rstrip("/")
        if not path.endswith(OTLP_LOGS_PATH):
            base = redact(endpoint).rstrip("/")
            found.append(
                f"otlp_logs_endpoint {base} does not end in {OTLP_LOGS_PATH}, the path of OTLP/HTTP logs: "
                f"receivers answer 404 elsewhere (Loki: {base}/otlp{OTLP_LOGS_PATH}; "
                f"an OpenTelemetry Collector: {base}{OTLP_LOGS_PATH})"
            )
    return found


def secret_values(config: Config) -> list[str]:
    """Every secret the configuration holds, for masking in log lines."""
    values: list[str] = []
    for option in OPTIONS:
        if not option.secret:
            continue
        value = getattr(config, field_name(option.key))
        if isinstance(value, str) and value:
            values.extend(url_secrets(value) if "://" in value else [value])
        elif isinstance(value, tuple):
            values.extend(item[1] if isinstance(item, tuple) else item for item in value)
    for endpoint in config.webhooks:
        values.extend([endpoint.secret, *url_secrets(endpoint.url)])
    return [v for v in values if len(v) >= 4]  # shorter ones would mask ordinary words


class SecretFilter(logging.Filter):
    """Masks secrets in every log record that passes a handler.

    The configuration's own secrets (``secrets``, from :func:`secret_values`) are
    masked wherever they appear, however a library quotes them; then
    :func:`.redact.redact` masks what any other URL or message carries (a
    receiver's redirect target, a password in a connection error).
    """

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = sorted(set(secrets), key=len, reverse=True)  # a secret inside another goes second

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self.clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.clean(record.exc_text)
        return True

    def clean(self, text: str) -> str:
        """``text`` with the configuration's secrets and every credential :func:`.redact.redact` finds masked."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return redact(text)
