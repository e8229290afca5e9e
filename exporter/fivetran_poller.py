"""The Fivetran poller: each connection's last success and failure from Fivetran's REST API, as jobs.

Each poll lists ``GET /v1/connections`` (HTTP Basic with the API key and
secret, ``Accept: application/json;version=2``) a page of :data:`PAGE` at a
time by ``cursor`` until ``next_cursor`` is empty. A ``succeeded_at`` or
``failed_at`` newer than the one already made into a job is a job that ended
then (:mod:`.sources.fivetran_api`). What was made into jobs is stored per
connection after each page's jobs are: a restart lists again from the start
and makes no job twice (nor would it count one twice: the job ids are the same).

What each connection reports of itself (``status.setup_state``, ``sync_state``,
``update_state``, ``paused``, ``sync_frequency``) is stored with each page, for the
``calabi_sync_connection_*`` gauges; it shows on a connection's series once a job
of it is known (a connection that never synced has none).

With ``sources.fivetran.webhook_secret`` set, the webhook brings the jobs (it
knows each sync's id and start) and the poller makes none; the two would name
one sync differently.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any, Final

from .backoff import Backoff
from .config import Config
from .model import Job, ValidationError
from .pollers import MAX_PAGES, PollFailed, SourcePoller, bad_answer
from .redact import redact
from .sources import BAD_ANSWER, REFUSED, ConnectionState, fivetran_api
from .sources.fivetran import PLATFORM
from .store import Store
from .store.records import FIVETRAN_POLL_ROLE
from .timeutil import Clock, system_clock

log = logging.getLogger(__name__)

#: Connections asked for per page.
PAGE: Final = 100


class FivetranPoller(SourcePoller):
    SOURCE = PLATFORM
    NAME = "calabi-fivetran-poller"

    def __init__(
        self, store: Store, config: Config, *, clock: Clock = system_clock, backoff: Backoff = SourcePoller.BACKOFF
    ) -> None:
        super().__init__(
            store,
            role=FIVETRAN_POLL_ROLE,
            interval=config.sources_fivetran_poll_interval_seconds,
            clock=clock,
            backoff=backoff,
        )
        self._url = f"{config.sources_fivetran_api_url.rstrip('/')}/v1/connections"
        credentials = f"{config.sources_fivetran_api_key}:{config.sources_fivetran_api_secret}".encode()
        self._headers = {
            "Authorization": f"Basic {base64.b64encode(credentials).decode()}",
            "Accept": fivetran_api.ACCEPT,
        }
        self._makes_jobs = not config.sources_fivetran_webhook_secret

    def poll(self) -> bool:
        seen = {key: _seen(value) for key, value in self._store.source_polls.cursors(self.SOURCE).items()}
        cursor: str | None = None
        cursors: set[str] = set()
        for _ in range(MAX_PAGES):
            if self.stopping():
                return False
            params = {"limit": str(PAGE)} | ({"cursor": cursor} if cursor else {})
            status, answer = self.request_json(self._url, params=params, headers=self._headers)
            if status == 401:
                raise PollFailed(REFUSED, f"HTTP 401 from {self._url}: check sources.fivetran.api_key and api_secret")
            try:
                items, cursor = fivetran_api.page(answer)
            except ValidationError as error:
                raise bad_answer(self._url, error) from None
            self._store_page(items, seen)
            if cursor is None:
                return False
            if cursor in cursors:
                raise PollFailed(BAD_ANSWER, f"{self._url} gave the next_cursor {cursor[:40]!r} twice")
            cursors.add(cursor)
        # A listing is read from its start at each poll: the connections past the bound are read by none.
        log.warning("fivetran poller: more than %d connections; those past them are not read", MAX_PAGES * PAGE)
        return False

    def _store_page(self, items: list[Any], seen: dict[str, fivetran_api.Seen]) -> None:
        """Store the page's new jobs, then what each connection's jobs now cover; a connection the API
        describes wrongly is counted as rejected and the others kept."""
        latest = self._clock()
        jobs: list[Job] = []
        refused: list[str] = []
        now_seen: dict[str, fivetran_api.Seen] = {}
        states: list[ConnectionState] = []
        for item in items:
            try:
                ident = fivetran_api.connection_id(item)
                state = fivetran_api.state_of(item)
                before = seen.get(ident, fivetran_api.Seen())
                if self._makes_jobs:
                    jobs += fivetran_api.jobs_of(item, before, latest=latest)
                after = fivetran_api.seen_now(item, before)
            except (ValidationError, ValueError, TypeError) as error:
                refused.append(error.field if isinstance(error, ValidationError) else "data.items[]")
                log.warning("fivetran poller: a connection not as documented was skipped: %s", redact(str(error)))
                continue
            states.append(state)
            if after != before:
                now_seen[ident] = after
        if jobs or refused:
            self._store.ingest.jobs(
                jobs, endpoint=self.SOURCE, rejected=len(refused), rejected_fields=refused, token=None
            )
        self._store.source_polls.save_states(states, latest)
        values = {ident: json.dumps([s.succeeded_at, s.failed_at]) for ident, s in now_seen.items()}
        self._store.source_polls.save_cursors(self.SOURCE, values, self._clock())
        seen.update(now_seen)


def _seen(value: str) -> fivetran_api.Seen:
    """What the store holds of a connection: ``[succeeded_at, failed_at]`` (anything else: nothing seen)."""
    try:
        succeeded, failed = json.loads(value)
    except (ValueError, TypeError):
        return fivetran_api.Seen()
    return fivetran_api.Seen(
        succeeded if isinstance(succeeded, int | float) else None, failed if isinstance(failed, int | float) else None
    )
