"""The Airbyte poller: sync jobs from Airbyte's public API, for a workspace whose webhook cannot reach us.

Each poll asks ``GET /v1/jobs?jobType=sync&orderBy=updatedAt|ASC`` from the
stored cursor (``updatedAtStart``), :data:`PAGE` jobs at a time, until a page
is empty (Airbyte's own ``next`` link drops the cursor and the order, so it is
not followed). After each page is stored, the cursor moves to the newest finish
read less :data:`OVERLAP`, and the next page is asked from there: a restart, or
a job updated while the pages are read, costs reading a few jobs again (the
same records, counted once), never a job missed. The first poll reads
``sources.airbyte.backfill_seconds`` back.

The access token comes from ``POST /v1/applications/token`` (the application's
client id and secret) and is renewed a minute before it expires (at most
half its life before), or at once when a request gets 401. Each job
names its connection by id; the name comes from ``GET /v1/connections/{id}``,
looked up once an hour per connection. With ``sources.airbyte.config_api_url``
set, each finished job's streams, start and failure come from the configuration
API (:data:`DETAILS_PATH`).

A job also posted by Airbyte's webhook has the same id (``airbyte:<jobId>``):
it is one job, counted once.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from .backoff import Backoff
from .config import Config
from .model import Job, ValidationError
from .pollers import MAX_PAGES, PollFailed, SourcePoller, bad_answer
from .redact import redact
from .sources import BAD_ANSWER, RATE_LIMITED, REFUSED, UNREACHABLE, airbyte_api
from .sources.airbyte import PLATFORM
from .store import Store
from .store.records import AIRBYTE_POLL_ROLE
from .timeutil import Clock, format_rfc3339, parse_rfc3339, system_clock

log = logging.getLogger(__name__)

#: Where the configuration API tells a job's attempts: without their logs, which can be megabytes.
DETAILS_PATH: Final = "/v1/jobs/get_without_logs"
#: Jobs asked for per page: the API's largest.
PAGE: Final = 100
#: The cursor's key in the store.
CURSOR: Final = "updated_at_start"
#: Seconds the cursor stays behind the newest finish read: jobs whose update a slower clock or a
#: late commit dated earlier are read again (and counted once) rather than missed.
OVERLAP: Final = 60.0
#: Seconds before its expiry that a token is renewed, at most half its life.
RENEW_MARGIN: Final = 60.0
#: Seconds a connection's name is used before it is looked up again (a rename shows within this).
NAME_TTL: Final = 3600.0


class AirbytePoller(SourcePoller):
    SOURCE = PLATFORM
    NAME = "calabi-airbyte-poller"

    def __init__(
        self, store: Store, config: Config, *, clock: Clock = system_clock, backoff: Backoff = SourcePoller.BACKOFF
    ) -> None:
        super().__init__(
            store,
            role=AIRBYTE_POLL_ROLE,
            interval=config.sources_airbyte_poll_interval_seconds,
            clock=clock,
            backoff=backoff,
        )
        self._base = config.sources_airbyte_api_url.rstrip("/")
        self._client = (config.sources_airbyte_client_id, config.sources_airbyte_client_secret)
        self._backfill = config.sources_airbyte_backfill_seconds
        self._config_api = config.sources_airbyte_config_api_url.rstrip("/")
        self._token: tuple[str, float] | None = None  # (token, renew at)
        self._names: dict[str, tuple[str, float]] = {}  # connection id -> (name, looked up at)

    def poll(self) -> bool:
        stored = self._store.source_polls.cursors(self.SOURCE).get(CURSOR)
        start = stored or format_rfc3339(self._clock() - self._backfill)
        newest = parse_rfc3339(start)
        offset = 0
        read: set[Any] = set()  # job ids stored in this poll
        for _ in range(MAX_PAGES):
            if self.stopping():
                return True
            params = {
                "jobType": airbyte_api.JOB_TYPE,
                "updatedAtStart": start,
                "orderBy": "updatedAt|ASC",
                "limit": str(PAGE),
                "offset": str(offset),
            }
            url = f"{self._base}/jobs"
            try:
                items = airbyte_api.page_items(self._authorized(url, params))
            except ValidationError as error:
                raise bad_answer(url, error) from None
            if not items:
                return False
            fresh = [item for item in items if _job_key(item) not in read]
            read.update(_job_key(item) for item in fresh)
            newest = max(newest, self._store_page(fresh))
            cursor = format_rfc3339(max(newest - OVERLAP, parse_rfc3339(start)))
            self._store.source_polls.save_cursors(self.SOURCE, {CURSOR: cursor}, self._clock())
            # From the new cursor again, rather than the next offset: a job updated while the pages are read
            # moves to the end of the list, which shifts those after it back into a page already read. Jobs
            # read again are skipped; when the cursor did not move (a page within OVERLAP), the next offset.
            start, offset = (cursor, 0) if cursor != start else (start, offset + PAGE)
        return True

    def _store_page(self, items: list[Any]) -> float:
        """Store the page's jobs (a job the API describes wrongly is counted as rejected, the others kept);
        the newest finish among those stored (0: none ended)."""
        latest = self._clock()
        jobs: list[Job] = []
        refused: list[str] = []
        for item in items:
            try:
                name = self._connection_name(item.get("connectionId") if isinstance(item, dict) else None)
                jobs.append(self._job(item, name, latest))
            except (ValidationError, ValueError, TypeError) as error:
                refused.append(error.field if isinstance(error, ValidationError) else "data[]")
                log.warning("airbyte poller: a job is not as documented and was skipped: %s", redact(str(error)))
        self._store.ingest.jobs(jobs, endpoint=self.SOURCE, rejected=len(refused), rejected_fields=refused, token=None)
        # Only stored jobs move the cursor, and validation keeps their finish within the clock: a job
        # dated in the future cannot carry the cursor past the jobs still to come.
        return max((job.finished_at or 0.0 for job in jobs), default=0.0)

    def _job(self, item: Any, name: str, latest: float) -> Job:
        """The item's job, with its details from the configuration API when that is configured and the job ended.

        Details Airbyte does not give (404, a refusal, an answer not as documented
        or a server error on that one job) are left out: the job as the public API
        describes it is stored, so one job can never hold the poller back. Only
        an API that does not answer at all, or asks to wait, fails the poll.
        """
        job = airbyte_api.job_of(item, name, latest=latest)
        if not self._config_api or not job.finished:
            return job
        url = f"{self._config_api}{DETAILS_PATH}"
        body = json.dumps({"id": airbyte_api.job_id_of(item)}).encode()
        try:
            info = self._authorized(url, None, method="POST", body=body)
            return airbyte_api.job_of(item, name, latest=latest, details=airbyte_api.details_of(info, job.status))
        except PollFailed as failed:
            if failed.outcome in (UNREACHABLE, RATE_LIMITED):
                raise
            log.warning("airbyte poller: no details of job %s: %s", job.job_id, redact(str(failed)))
        except ValidationError as error:
            log.warning("airbyte poller: the details of job %s were left out: %s", job.job_id, redact(str(error)))
        return job

    def _connection_name(self, connection_id: Any) -> str:
        """The connection's name (its id when Airbyte does not say it)."""
        if not isinstance(connection_id, str) or not connection_id:
            raise ValidationError("connectionId", "must be the connection's id")
        now = self._clock()
        known = self._names.get(connection_id)
        if known is not None and now - known[1] < NAME_TTL:
            return known[0]
        url = f"{self._base}/connections/{connection_id}"
        try:
            name = airbyte_api.connection_name(self._authorized(url, None))
        except ValidationError:
            name = known[0] if known is not None else connection_id
        except PollFailed as failed:
            if failed.status != 404:  # not answering, busy or refusing: the poll waits, no name is guessed
                raise
            name = known[0] if known is not None else connection_id  # deleted since: its id stands for it
        self._names[connection_id] = (name, now)
        return name

    def _authorized(
        self, url: str, params: dict[str, str] | None, *, method: str = "GET", body: bytes | None = None
    ) -> Any:
        """The JSON answer of a request with the access token; a 401 gets a new token and one more try."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in range(2):
            status, answer = self.request_json(
                url,
                params=params,
                method=method,
                body=body,
                headers=headers | {"Authorization": f"Bearer {self._access()}"},
            )
            if status != 401:
                return answer
            self._token = None
            if attempt:
                raise PollFailed(REFUSED, f"HTTP 401 from {url} with a new access token")
        raise AssertionError("unreachable")

    def _access(self) -> str:
        """A token that is not about to expire, from ``POST /applications/token`` when there is none."""
        now = self._clock()
        if self._token is not None and now < self._token[1]:
            return self._token[0]
        url = f"{self._base}/applications/token"
        client_id, client_secret = self._client
        body = {"client_id": client_id, "client_secret": client_secret, "grant_type": "client_credentials"}
        status, answer = self.request_json(
            url, method="POST", headers={"Content-Type": "application/json"}, body=json.dumps(body).encode()
        )
        if status == 401:
            raise PollFailed(REFUSED, f"HTTP 401 from {url}: check sources.airbyte.client_id and client_secret")
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise PollFailed(BAD_ANSWER, f"the answer of {url} has no access_token")
        life = answer.get("expires_in")
        life = float(life) if isinstance(life, int | float) and not isinstance(life, bool) and life > 0 else 180.0
        self._token = (token, now + life - min(RENEW_MARGIN, life / 2))
        return token


def _job_key(item: Any) -> Any:
    """What tells a listed job from another within one poll: its id (the item itself when it has none)."""
    job_id = item.get("jobId") if isinstance(item, dict) else None
    return job_id if isinstance(job_id, int) else repr(item)[:200]
