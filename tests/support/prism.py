"""Prism (Stoplight's OpenAPI mock server, from npm) in front of a scripted vendor API.

``prism proxy --errors`` forwards each request to the scripted API and checks
the request and the answer against the vendor's own OpenAPI document: a request
the document does not allow (a limit above the maximum, a missing credential)
gets 422 or 401 from Prism and never reaches the API, and an answer that breaks
the document becomes a 500. So a poller test passes only if what the poller
sends, and what it was made to read, are what the vendor documents.

The documents are the vendors' own, cut to the operations the pollers call
(``tests/data/sources/openapi/``, each named with its source there).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import requests

from .paths import ROOT
from .processes import free_port, stop_server
from .real_components import missing
from .waiting import wait_until

#: Where the test command installs Prism (scripts/setup.sh, ``ensure_prism``).
PINNED_PRISM: Final = ROOT / ".tools" / "node_modules" / ".bin" / "prism"
DOCUMENTS: Final = ROOT / "tests" / "data" / "sources" / "openapi"
AIRBYTE_DOCUMENT: Final = DOCUMENTS / "airbyte-public-api.json"
AIRBYTE_CONFIG_DOCUMENT: Final = DOCUMENTS / "airbyte-config-api.json"
FIVETRAN_DOCUMENT: Final = DOCUMENTS / "fivetran-rest-api.json"


def prism_binary() -> str:
    """The test command's Prism (the test skips where there is none, and fails so in CI)."""
    if os.access(PINNED_PRISM, os.X_OK):
        return str(PINNED_PRISM)
    missing(f"Prism is not installed at {PINNED_PRISM} (./scripts/test installs it from npm)")


@contextmanager
def prism_proxy(document: Path, upstream: str, log_path: Path) -> Iterator[str]:
    """Prism validating every exchange with ``upstream`` against ``document``; yields its base URL."""
    port = free_port()
    argv = [prism_binary(), "proxy", "--errors", "-h", "127.0.0.1", "-p", str(port), str(document), upstream]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert process.poll() is None, "Prism exited: " + log_path.read_text()
            try:
                requests.get(f"{base}/__ready", timeout=1)
            except requests.RequestException:
                return False
            return True

        try:
            wait_until(answers, timeout=90, what="Prism to answer")
            yield base
        finally:
            stop_server(process)
