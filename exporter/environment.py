"""Which ``CALABI_*`` environment variables the commands read, and which they leave alone.

Every option of :data:`.config.OPTIONS` has its variable (:func:`.config.env_name`);
:data:`VARIABLES` lists the others a command documents (the configuration file,
the simulator's and the MCP tools' tokens). Any command accepts all of them,
so one environment (a container's, a shell that sourced a file) serves every
command. Kubernetes adds variables of its own to every pod, one set per Service
in the namespace (service links): a Service called ``calabi-exporter`` gives
``CALABI_EXPORTER_SERVICE_HOST``, ``CALABI_EXPORTER_PORT`` and more, which share
the prefix but are no settings, so they are recognised and left alone. Any
other ``CALABI_*`` variable is most likely a misspelt setting: it stops the
command, naming the closest known variable.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Variable:
    """An environment variable a command reads besides the options' own."""

    name: str
    commands: tuple[str, ...]
    doc: str
    secret: bool = False


#: The commands that read the configuration (file, options' variables, flags).
CONFIG_COMMANDS: Final = ("serve", "demo", "check-config", "healthcheck", "export", "redrive-dead-letters", "mcp")

CONFIG_FILE: Final = Variable("CALABI_CONFIG", CONFIG_COMMANDS, "The YAML configuration file, as `--config`.")
SIMULATOR_TOKEN: Final = Variable(
    "CALABI_SIMULATOR_TOKEN", ("simulate",), "Ingest token the simulator sends, as `--token`.", secret=True
)
MCP_TOKEN: Final = Variable(
    "CALABI_MCP_TOKEN",
    ("mcp",),
    "Bearer token (a read token) the MCP tools send to the read API of `--url`, as `--token`.",
    secret=True,
)
VARIABLES: Final = (CONFIG_FILE, SIMULATOR_TOKEN, MCP_TOKEN)
BY_NAME: Final = {v.name: v for v in VARIABLES}

#: What Kubernetes injects per Service (``enableServiceLinks``, on by default), the service's name
#: upper-cased with ``-`` as ``_``: ``<S>_SERVICE_HOST``, ``<S>_SERVICE_PORT``,
#: ``<S>_SERVICE_PORT_<PORT NAME>``, and the Docker-links style ``<S>_PORT``,
#: ``<S>_PORT_<n>_<PROTO>`` and its ``_PROTO``, ``_PORT`` and ``_ADDR``. Each value has a
#: known shape too, so a misspelt setting that merely ends like one is still caught.
_SERVICE_LINK: Final = re.compile(
    r"^[A-Z][A-Z0-9_]*?_(?:"
    r"(?P<host>SERVICE_HOST)"
    r"|(?P<service_port>SERVICE_PORT(?:_[A-Z0-9_]+)?)"
    r"|(?P<url>PORT(?:_[0-9]{1,5}_(?:TCP|UDP|SCTP))?)"
    r"|(?P<proto>PORT_[0-9]{1,5}_(?:TCP|UDP|SCTP)_PROTO)"
    r"|(?P<port>PORT_[0-9]{1,5}_(?:TCP|UDP|SCTP)_PORT)"
    r"|(?P<addr>PORT_[0-9]{1,5}_(?:TCP|UDP|SCTP)_ADDR)"
    r")$"
)
_ADDRESS: Final = r"(?:[0-9.]+|[0-9A-Fa-f:]+|[A-Za-z0-9.-]+)"
_VALUE_SHAPES: Final = {
    "host": re.compile(rf"^{_ADDRESS}$"),
    "service_port": re.compile(r"^[0-9]{1,5}$"),
    "url": re.compile(rf"^(?:tcp|udp|sctp)://(?:{_ADDRESS}|\[[0-9A-Fa-f:]+\]):[0-9]{{1,5}}$"),
    "proto": re.compile(r"^(?:tcp|udp|sctp)$"),
    "port": re.compile(r"^[0-9]{1,5}$"),
    "addr": re.compile(rf"^{_ADDRESS}$"),
}


def is_service_link(name: str, value: str) -> bool:
    """Whether ``name=value`` is one of the variables Kubernetes injects for a Service.

    >>> is_service_link("CALABI_EXPORTER_SERVICE_HOST", "10.96.0.12")
    True
    >>> is_service_link("CALABI_EXPORTER_PORT_9188_TCP", "tcp://10.96.0.12:9188")
    True
    >>> is_service_link("CALABI_EXPORTER_PORT", "9188")  # not Kubernetes' shape: a setting someone meant
    False
    """
    match = _SERVICE_LINK.match(name)
    if match is None or match.lastgroup is None:
        return False
    return _VALUE_SHAPES[match.lastgroup].match(value) is not None


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known variable ``name`` most likely misspells, if one is close.

    >>> closest("CALABI_WROKERS", ["CALABI_WORKERS", "CALABI_THREADS"])
    'CALABI_WORKERS'
    >>> closest("CALABI_INGEST_TOKEN", ["CALABI_INGEST_TOKENS", "CALABI_READ_TOKENS"])
    'CALABI_INGEST_TOKENS'
    >>> closest("CALABI_NOTHING_LIKE_IT", ["CALABI_WORKERS"]) is None
    True
    """
    found = difflib.get_close_matches(name, list(known), n=1, cutoff=0.8)
    return found[0] if found else None
