"""``calabi-exporter healthcheck``: is the exporter this configuration describes ready?

A container's health check must ask the address the server really listens
on, which the configuration (file, ``CALABI_LISTEN``, flags) decides; a fixed
``127.0.0.1:9188`` reports a healthy exporter on another port as unhealthy.
The check reads the same configuration as ``serve`` and asks ``/readyz``
there, on loopback when the server listens on every interface.
"""

from __future__ import annotations

import http.client
from typing import Final

from .config import Config

#: Seconds to wait for the answer; a container runtime's own timeout is usually a few seconds.
TIMEOUT_SECONDS: Final = 2.0
#: Where to ask when the server listens on every interface (or names none).
_ANY_ADDRESS: Final = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def probe_address(listen: str) -> tuple[str, int]:
    """The host and port to ask for a ``listen`` value.

    >>> probe_address("0.0.0.0:9200"), probe_address("[::]:9188"), probe_address("10.1.2.3:9188")
    (('127.0.0.1', 9200), ('::1', 9188), ('10.1.2.3', 9188))
    """
    host, _, port = listen.rpartition(":")
    name = host.strip("[]")
    return _ANY_ADDRESS.get(name, name), int(port)


def check(config: Config, timeout: float = TIMEOUT_SECONDS) -> str | None:
    """None when ``/readyz`` answers 200; else one line saying what went wrong."""
    host, port = probe_address(config.listen)
    where = f"http://{f'[{host}]' if ':' in host else host}:{port}/readyz"
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/readyz", headers={"User-Agent": "calabi-exporter-healthcheck"})
        response = connection.getresponse()
        body = response.read(300).decode("utf-8", "replace").strip()
    except OSError as error:
        return f"{where}: {error}"
    finally:
        connection.close()
    if response.status != 200:
        return f"{where}: HTTP {response.status} {body}"
    return None
