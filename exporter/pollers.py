"""Polling a vendor's API for jobs: the part every poller shares (timing, retries, health, bounded reads).

A poller is background work with a role (one process among the workers and
replicas polls; another takes over when it goes, :mod:`.singleton`). Each poll
reads the vendor's API from the cursor kept in the store and stores what it
read through the same ingest as every other job. A poll that fails is retried
by the project's one rule (:mod:`.backoff`): exponential with jitter, a
server's ``Retry-After`` taking its place; until then nothing else is asked.

Every poll is counted by its outcome (``calabi_exporter_source_polls_total``)
and a good one is the last good poll
(``calabi_exporter_source_last_successful_poll_timestamp_seconds``), both in
the store, so whichever process is scraped shows them.

A vendor's answer is read within a total deadline and up to
:data:`MAX_ANSWER` bytes (:mod:`.bounded_http`); the reason of a failure is
logged through :func:`.redact.redact`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, Final

import requests

from . import __version__
from .backoff import Backoff
from .bounded_http import bound, exchange
from .model import ValidationError
from .redact import redact
from .sessions import ThreadSessions
from .singleton import SingletonWorker
from .sources import BAD_ANSWER, OK, RATE_LIMITED, REFUSED, SERVER_ERROR, STORE_ERROR, UNREACHABLE
from .store import Store, StoreError
from .timeutil import Clock, retry_after_seconds

log = logging.getLogger(__name__)

#: Bytes of one answer read at most: a page of the largest size asked for, with room to spare.
MAX_ANSWER: Final = 16 * 1024 * 1024
#: Seconds one request may take, answer included.
TIMEOUT: Final = 30.0
#: Pages one poll reads at most; the next poll goes on from the cursor.
MAX_PAGES: Final = 200


class PollFailed(Exception):
    """A poll that did not get what it asked for: its outcome, why, and the wait the server asked for."""

    def __init__(
        self, outcome: str, reason: str, retry_after: float | None = None, *, status: int | None = None
    ) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.retry_after = retry_after
        self.status = status  # the HTTP status of the answer, when there was one


class SourcePoller(SingletonWorker):
    """Calls :meth:`poll` every ``interval`` seconds while it holds its role; retries a failed poll sooner."""

    SOURCE: str = ""
    BACKOFF: Final = Backoff(first=5.0, cap=600.0)

    def __init__(self, store: Store, *, role: str, interval: float, clock: Clock, backoff: Backoff = BACKOFF) -> None:
        self._store = store
        self._interval = interval
        self._clock = clock
        self._backoff = backoff
        self._failures = 0
        self._retry_after: float | None = None
        self._more = False
        self._sessions = ThreadSessions(bound)
        super().__init__(store.role_lock(role))

    def poll(self) -> bool:
        """Read what is new since the stored cursor and store it; whether more is waiting (it stopped at
        :data:`MAX_PAGES`). Raises :class:`PollFailed` when that fails."""
        raise NotImplementedError

    def poll_once(self) -> str:
        """One poll, counted by its outcome; the outcome."""
        retry_after = None
        self._more = False
        try:
            self._more = self.poll()
            outcome = OK
        except PollFailed as failed:
            outcome, retry_after = failed.outcome, failed.retry_after
            log.warning("%s poller: %s", self.SOURCE, redact(str(failed)))
        except StoreError as error:
            outcome = STORE_ERROR
            log.error("%s poller: store error: %s", self.SOURCE, error)
        except Exception as error:  # an answer shaped as no one foresaw: counted, so that the alert sees it
            outcome = BAD_ANSWER
            log.exception("%s poller: the poll failed: %s", self.SOURCE, redact(str(error)))
        self._retry_after = retry_after
        try:
            self._store.source_polls.polled(self.SOURCE, outcome, self._clock())
        except StoreError as error:
            log.error("%s poller: the poll could not be counted: %s", self.SOURCE, error)
        return outcome

    def stopping(self) -> bool:
        """Whether the poll should end here (between pages): the process stops, or another took the role."""
        return self._stop.is_set() or not self._lock.acquire()

    def step(self) -> float:
        if self.poll_once() == OK:
            self._failures = 0
            return 0.0 if self._more else self._interval
        self._failures += 1
        return self._backoff.wait(self._failures, self._retry_after)

    def close(self) -> None:
        self._sessions.close()

    def request_json(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        method: str = "GET",
        body: bytes | None = None,
    ) -> tuple[int, Any]:
        """The status and the JSON of an answer that is 2xx or 401; any other is a :class:`PollFailed`.

        401 is returned, not raised, so that a poller whose token expired gets
        another and asks again.
        """
        sent = {"User-Agent": f"calabi-exporter/{__version__}", "Accept": "application/json", **headers}
        try:
            answer = exchange(
                self._sessions.get(),
                method,
                url,
                headers=sent,
                params=params,
                data=body,
                timeout=TIMEOUT,
                max_body=MAX_ANSWER,
            )
        except requests.RequestException as error:
            raise PollFailed(UNREACHABLE, f"{type(error).__name__}: {error}") from None
        status = answer.status
        if status == 401:
            return status, None
        if status == 429 or status >= 500:
            wait = retry_after_seconds(answer.headers.get("Retry-After"), self._clock())
            outcome = RATE_LIMITED if status == 429 else SERVER_ERROR
            raise PollFailed(outcome, f"HTTP {status} from {url}: {answer.text()[:300]}", wait, status=status)
        if not 200 <= status < 300:
            raise PollFailed(REFUSED, f"HTTP {status} from {url}: {answer.text()[:300]}", status=status)
        if answer.truncated:
            raise PollFailed(BAD_ANSWER, f"the answer of {url} is larger than {MAX_ANSWER} bytes")
        try:
            return status, json.loads(answer.body)
        except (ValueError, RecursionError) as error:
            raise PollFailed(BAD_ANSWER, f"the answer of {url} is not JSON: {error}") from None


def bad_answer(url: str, error: ValidationError) -> PollFailed:
    """An answer whose shape is not the documented one, naming the field."""
    return PollFailed(BAD_ANSWER, f"the answer of {url} is not as documented: {error}")
