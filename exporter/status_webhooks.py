"""Delivery of job status changes to the configured webhook endpoints.

The store queues each change for each endpoint whose filters it passes, in the
transaction that records the change, so an answered ingest request never loses
an event. This worker (one process per data directory) POSTs them:

- only the oldest waiting event of a job is tried, so a job's events arrive in
  order even across retries;
- a timeout, a connection error, 408, 429 or 5xx is retried with exponential
  backoff (or the endpoint's ``Retry-After``) for up to 24 hours from the
  change, then dead-lettered; any other 4xx (410 Gone included) is
  dead-lettered at once, since sending it again would get the same answer;
- after a retryable failure the endpoint's other events, and the ones queued
  for it meanwhile, wait for the same retry, so an endpoint that is down costs
  one request per period, not one per event;
- each endpoint is served by its own thread, dispatched on its own, so a slow
  endpoint never holds back another;
- a redirect is not followed (the signature is for the configured URL): it is
  dead-lettered with its ``Location`` so that the URL can be corrected;
- an attempt, answer included, lasts at most the endpoint's ``timeout_seconds``
  in all, and at most 64 KiB of the answer is read (:mod:`.bounded_http`);
- every reason, logged or stored with a retry or a dead letter, passes
  :func:`.redact.redact`: the endpoint's ``?token=`` (which a connection error
  quotes) and any credential in a ``Location`` or an answer are masked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final

import requests

from . import __version__
from .backoff import Backoff
from .bounded_http import bound, post
from .config import Config, WebhookEndpoint
from .redact import redact
from .sessions import ThreadSessions
from .singleton import SingletonWorker
from .status_webhook_signing import HEADER, sign
from .store import Delivery, Store, StoreError
from .store.records import WEBHOOKS_ROLE
from .timeutil import Clock, retry_after_seconds, system_clock

log = logging.getLogger(__name__)
EVENT_ID_HEADER: Final = "Calabi-Event-Id"
RETRYABLE_4XX: Final = frozenset({408, 429})


class WebhookDeliverer(SingletonWorker):
    """POSTs queued status changes, signed, with retries; see the module docstring."""

    NAME = "calabi-webhooks"
    IDLE: float = 0.5  # seconds between looks at the queue when nothing was due
    BUSY_POLL: Final = 0.05  # while deliveries are in flight: hand the free endpoints their next events
    BATCH: Final = 200
    BACKOFF: Final = Backoff(first=1.0, cap=3600.0)
    MAX_AGE: float = 86400.0  # an event still failing this long after the change is dead-lettered

    def __init__(
        self, store: Store, config: Config, *, clock: Clock = system_clock, backoff: Backoff = BACKOFF
    ) -> None:
        self._queue = store.status_webhooks
        self._backoff = backoff
        self._endpoints = {e.name: e for e in config.webhooks}
        self._clock = clock
        self._sessions = ThreadSessions(bound)  # one per endpoint thread
        self._pool = ThreadPoolExecutor(max_workers=max(len(self._endpoints), 1), thread_name_prefix=self.NAME)
        self._running: dict[str, Future[int]] = {}
        self._orphans_done = False
        super().__init__(store.role_lock(WEBHOOKS_ROLE))

    def deliver_once(self) -> int:
        """Hand every free endpoint its due events and wait for them; returns the attempts made."""
        return sum(future.result() for future in self._dispatch())

    def _dispatch(self) -> list[Future[int]]:
        """Hand each endpoint that is not busy its due events, each endpoint on its own thread."""
        now = self._clock()
        started = []
        for name in self._endpoints:
            running = self._running.get(name)
            if running is not None and not running.done():
                continue
            due = self._queue.due(name, now, self.BATCH)
            if due:
                self._running[name] = future = self._pool.submit(self._deliver_all, due)
                future.add_done_callback(_log_failure)
                started.append(future)
        return started

    def _busy(self) -> bool:
        return any(not future.done() for future in self._running.values())

    def _deliver_all(self, deliveries: Sequence[Delivery]) -> int:
        """One endpoint's due events in queue order, until one fails in a way worth retrying.

        After such a failure the rest are not sent (the store postponed them
        with the failed one), but those already 24 hours old are dead-lettered
        now, so that a long outage does not cost one request per expired event.
        """
        attempts = 0
        failure: str | None = None
        for delivery in deliveries:
            if failure is None:
                attempts += 1
                failure = self._deliver(self._endpoints[delivery.endpoint], delivery)
            elif self._clock() - delivery.created_at >= self.MAX_AGE:
                self._queue.dead(delivery, f"undelivered after 24 hours: {failure}")
        return attempts

    def _deliver(self, endpoint: WebhookEndpoint, delivery: Delivery) -> str | None:
        """POST one event; the error when it failed and will be retried, else None."""
        body = delivery.payload.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"calabi-exporter/{__version__}",
            EVENT_ID_HEADER: delivery.event_id,
            HEADER: sign(endpoint.secret.encode(), body, timestamp=int(self._clock())),
        }
        try:
            session = self._sessions.get()
            answer = post(session, endpoint.url, data=body, headers=headers, timeout=endpoint.timeout_seconds)
        except requests.RequestException as error:
            return self._retry(delivery, redact(f"{type(error).__name__}: {error}")[:500], None)
        status = answer.status
        if 200 <= status < 300:
            self._queue.delivered(delivery)
            return None
        detail = f"HTTP {status}: {answer.text()[:300]}".rstrip(": ")
        if 300 <= status < 400:
            detail = f"HTTP {status} redirect to {answer.headers.get('Location', '?')}: configure the final URL"
        detail = redact(detail)  # stored and logged: a token in a URL the receiver quotes stays out of both
        if status in RETRYABLE_4XX or status >= 500:
            retry_after = retry_after_seconds(answer.headers.get("Retry-After"), self._clock())
            return self._retry(delivery, detail, retry_after)
        self._queue.dead(delivery, detail)
        log.warning(
            "webhook %s refused event %s for job %s: %s", endpoint.name, delivery.event_id, delivery.job_id, detail
        )
        return None

    def _retry(self, delivery: Delivery, error: str, retry_after: float | None) -> str:
        """Schedule the next attempt, never later than 24 hours after the change; after that, dead-letter."""
        now = self._clock()
        deadline = delivery.created_at + self.MAX_AGE
        wait = self._backoff.wait(delivery.attempts + 1, retry_after)  # attempts: those before this one
        if now >= deadline:
            self._queue.dead(delivery, f"undelivered after 24 hours: {error}")
            log.warning("webhook %s: event %s dead-lettered: %s", delivery.endpoint, delivery.event_id, error)
        else:
            wait = min(wait, deadline - now)  # the last try comes at the deadline, not an hour before it
            self._queue.retry(delivery, now + wait, error)
            log.info("webhook %s: %s; retrying in %.1fs", delivery.endpoint, error, wait)
        return error

    def step(self) -> float:
        try:
            if not self._orphans_done:
                self._orphans_done = True
                if dropped := self._queue.orphans(list(self._endpoints)):
                    log.warning("webhooks: %d events of endpoints no longer configured dead-lettered", dropped)
            started = self._dispatch()
            return self.BUSY_POLL if started or self._busy() else self.IDLE
        except StoreError as error:
            log.error("webhooks: store error: %s", error)
            return self.ERROR_WAIT

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._sessions.close()


def _log_failure(future: Future[int]) -> None:
    error = future.exception()
    if error is not None:
        log.error("webhooks: delivery failed: %s", error, exc_info=error)
