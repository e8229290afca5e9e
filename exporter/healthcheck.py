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

from .config import Config, local_address, local_url

#: Seconds to wait for the answer; a container runtime's own timeout is usually a few seconds.
TIMEOUT_SECONDS: Final = 2.0


def check(config: Config, timeout: float = TIMEOUT_SECONDS) -> str | None:
    """None when ``/readyz`` answers 200; else one line saying what went wrong."""
    host, port = local_address(config.listen)
    where = f"{local_url(config.listen)}/readyz"
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
