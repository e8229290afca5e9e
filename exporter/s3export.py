"""Export of finished jobs and their log lines to S3, for history kept beyond the retention window.

Finished jobs are sealed into batches, one per ``s3_export.batch_seconds`` of
finish time, once that window has ended (plus a settling delay for late log
lines). Each batch becomes two gzip-compressed NDJSON objects::

    <prefix>/jobs/dt=2026-04-06/20260406T080000Z-<digest>.ndjson.gz
    <prefix>/logs/dt=2026-04-06/20260406T080000Z-<digest>.ndjson.gz

The key is fixed when the batch is sealed, so a retried or repeated export
overwrites the same objects instead of adding copies. A job or log line that
changes a sealed batch sends the batch again under the same keys. The purge
deletes a job only after its batch is exported (see :mod:`.retention`).
"""

from __future__ import annotations

import gzip
import json
import logging
import tempfile
from collections.abc import Iterable
from typing import IO, Any, Final, Protocol

from .backoff import Backoff
from .config import Config
from .documents import job_document, line_document
from .singleton import SingletonWorker
from .store import ExportBatch, Store, StoreError
from .store.records import S3_ROLE
from .timeutil import Clock, system_clock

log = logging.getLogger(__name__)
SETTLE_SECONDS: Final = 300.0  # a window is sealed this long after it ends: late log lines still make it
_SPOOL_BYTES: Final = 16 * 1024 * 1024  # objects larger than this are staged on disk


class ObjectStore(Protocol):
    """The one S3 call the export needs (a boto3 S3 client has it)."""

    def upload_fileobj(self, Fileobj: IO[bytes], Bucket: str, Key: str, ExtraArgs: dict[str, Any] | None = None) -> Any:
        """Upload a file object (multipart when large); raise on failure."""
        ...


def s3_client(config: Config) -> ObjectStore:
    """A boto3 S3 client from the standard AWS credential chain, with the configured endpoint and region."""
    import boto3
    from botocore.config import Config as BotoConfig

    boto_config = BotoConfig(
        connect_timeout=10,
        read_timeout=60,
        retries={"mode": "standard", "max_attempts": 3},
        s3={"addressing_style": config.s3_export_addressing_style},
    )
    client: ObjectStore = boto3.session.Session().client(
        "s3",
        region_name=config.s3_export_region or None,
        endpoint_url=config.s3_export_endpoint_url or None,
        config=boto_config,
    )
    return client


def object_keys(prefix: str, batch: ExportBatch) -> tuple[str, str]:
    """The jobs and logs object keys of a batch.

    >>> object_keys("calabi", ExportBatch(1, "2026-04-06", "20260406T080000Z-0123456789abcdef", 0))[0]
    'calabi/jobs/dt=2026-04-06/20260406T080000Z-0123456789abcdef.ndjson.gz'
    """
    lead = f"{prefix}/" if prefix else ""
    return tuple(  # type: ignore[return-value]
        f"{lead}{kind}/dt={batch.day}/{batch.name}.ndjson.gz" for kind in ("jobs", "logs")
    )


def _ndjson_gzip(documents: Iterable[dict[str, Any]]) -> IO[bytes]:
    """The documents as gzip-compressed NDJSON, in a file rewound for upload.

    ``mtime=0`` makes the bytes depend on the content only, so an object sent
    again is identical to the first upload.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115 (closed by the caller)
    with gzip.GzipFile(fileobj=spool, mode="wb", mtime=0) as packed:
        for document in documents:
            packed.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode())
            packed.write(b"\n")
    spool.seek(0)
    return spool


class S3Exporter(SingletonWorker):
    """Seals finished jobs into batches and uploads them, one process per data directory."""

    NAME = "calabi-s3-export"
    INTERVAL: Final = 60.0
    BACKOFF: Final = Backoff(first=5.0, cap=300.0)

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        clock: Clock = system_clock,
        client: ObjectStore | None = None,
        backoff: Backoff = BACKOFF,
    ) -> None:
        self._queue = store.exports
        self._backoff = backoff
        self._config = config
        self._clock = clock
        self._client = client
        self._failures = 0
        super().__init__(store.role_lock(S3_ROLE))

    @property
    def client(self) -> ObjectStore:
        if self._client is None:
            self._client = s3_client(self._config)
        return self._client

    def seal(self) -> int:
        """Seal the jobs of every window that ended at least ``SETTLE_SECONDS`` ago."""
        window = self._config.s3_export_batch_seconds
        before = (self._clock() - SETTLE_SECONDS) // window * window
        return self._queue.seal(before, window)

    def upload(self, batch: ExportBatch) -> None:
        """Write the batch's two objects (logs first, so a jobs object never lacks its logs)."""
        batch = self._queue.jobs(batch)
        jobs = {job.job_id: job for job in batch.jobs}
        jobs_key, logs_key = object_keys(self._config.s3_export_prefix, batch)
        lines = (
            line_document(jobs[job_id], line, received_at)
            for job_id, line, received_at in self._queue.lines(batch.id)
            if job_id in jobs
        )
        for key, documents in ((logs_key, lines), (jobs_key, map(job_document, batch.jobs))):
            with _ndjson_gzip(documents) as body:
                try:
                    self.client.upload_fileobj(
                        body,
                        self._config.s3_export_bucket,
                        key,
                        ExtraArgs={"ContentType": "application/gzip"},
                    )
                except Exception:
                    self._queue.failed(1)
                    raise

    def export_batches(self, batches: Iterable[ExportBatch]) -> list[ExportBatch]:
        """Upload each batch and record it exported; returns the batches done. Raises on the first failure."""
        done = []
        for batch in batches:
            self.upload(batch)
            if not self._queue.done(batch, objects=2):
                log.info("s3 export: batch %s changed during its upload; sending it again", batch.name)
            done.append(batch)
        return done

    def export_once(self) -> int:
        """Seal, then upload every waiting batch once; returns the batches uploaded. Raises on an S3 failure.

        A batch that changed during its upload stays waiting and goes in the next call.
        """
        self.seal()
        done: set[int] = set()
        while not self._stop.is_set():
            batches = [b for b in self._queue.waiting() if b.id not in done]
            if not batches:
                break
            done.update(batch.id for batch in self.export_batches(batches))
        return len(done)

    def export_range(self, since: float, until: float) -> list[ExportBatch]:
        """Export every job finished in ``[since, until)`` now, whole batches at a time; returns the batches.

        Jobs not sealed yet are sealed first, whatever their window; batches
        already exported are sent again to the same keys.
        """
        window = self._config.s3_export_batch_seconds
        while self._queue.seal(until, window, finished_since=since):
            pass
        return self.export_batches(self._queue.batches_between(since, until))

    def step(self) -> float:
        try:
            exported = self.export_once()
        except StoreError as error:
            log.error("s3 export: store error: %s", error)
            return self.INTERVAL
        except Exception as error:  # boto3 raises many kinds; all mean "try again later"
            self._failures += 1
            wait = self._backoff.wait(self._failures)
            log.warning(
                "s3 export to bucket %s failed (%s); retrying in %.0fs", self._config.s3_export_bucket, error, wait
            )
            return wait
        self._failures = 0
        if exported:
            log.info("s3 export: %d batches exported", exported)
        return self.INTERVAL
