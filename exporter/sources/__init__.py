"""Sources: how jobs of other platforms come in, each turned into the exporter's own job records.

A source only reads a vendor's payload and says which job record it is (or that
it is a notice with no job); everything after (validation, the store, metrics,
alerts, logs, the read API) is the one path every job takes. Pure: no Flask,
no store, no network.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

OK: Final = "ok"
RATE_LIMITED: Final = "rate_limited"  # 429
SERVER_ERROR: Final = "server_error"  # 5xx
REFUSED: Final = "refused"  # another 4xx: credentials, permissions, a request the API does not take
UNREACHABLE: Final = "unreachable"  # no answer: connection refused or reset, timeout, DNS
BAD_ANSWER: Final = "bad_answer"  # an answer that is not what the API documents
STORE_ERROR: Final = "store_error"  # read, but what was read could not be stored
#: Every outcome of a poll of a vendor's API, each shown (from 0) for each configured poller.
POLL_OUTCOMES: Final = (OK, RATE_LIMITED, SERVER_ERROR, REFUSED, UNREACHABLE, BAD_ANSWER, STORE_ERROR)


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """What a connection reports of itself through a poller, besides its syncs: gauges of its series."""

    connection: str  # its name
    states: Mapping[str, str]  # part ("setup", "sync", "update") -> state, as reported
    paused: bool | None
    schedule_seconds: float | None  # its sync interval; None for a custom schedule or when not said
