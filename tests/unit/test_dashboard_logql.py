"""Every LogQL query of the dashboards filters on names the exporter's shipped records really carry."""

from __future__ import annotations

import json
import re

from calabi_exporter.config import Config
from calabi_exporter.joblogs import LogLine
from calabi_exporter.logship import resource_for, to_log_record
from calabi_exporter.model import parse_job
from calabi_exporter.store import OutboxEntry

from tests.support.logql_samples import SAMPLE_JOB, logql_queries
from tests.support.paths import ROOT

LOKI_DERIVED = {"detected_level"}  # Loki adds it from the severity of OTLP records


def loki_name(attribute: str) -> str:
    """How Loki names an OTLP attribute: dots become underscores."""
    return attribute.replace(".", "_")


def shipped_names() -> tuple[set[str], set[str]]:
    """(index labels, structured metadata) of a shipped line and summary, as Loki stores them."""
    config = Config(deployment_environment="prod", service_namespace="data")
    job = parse_job(SAMPLE_JOB)
    resource = resource_for(config, "c")
    index = {loki_name(name) for name in resource.attributes if name != "service.instance.id"}
    metadata = {"service_instance_id"}
    for line in (LogLine("INFO", "Syncing stream: Account", 1.0, "Account"), None):
        record = to_log_record(OutboxEntry(1, job, line, 1.0), resource)
        metadata |= {loki_name(name) for name in record.log_record.attributes or {} if name != "connection"}
    return index, metadata


def test_every_logql_query_uses_only_shipped_labels_and_metadata() -> None:
    index, metadata = shipped_names()
    queries = logql_queries()

    assert len(queries) >= 3
    assert {"connection", "service_name"} <= index
    assert {"job_id", "event", "status", "stream"} <= metadata
    for where, expr in queries:
        selector = re.match(r"\{([^}]*)\}", expr)
        assert selector, (where, expr)
        stream_labels = set(re.findall(r"(\w+)\s*=~?", selector.group(1)))
        assert stream_labels <= index, (where, stream_labels - index)
        pipeline = expr[selector.end() :]
        filters = set(re.findall(r"\|\s*(\w+)\s*(?:=~|!=|!~|=)", pipeline))
        assert filters <= index | metadata | LOKI_DERIVED, (where, filters - index - metadata - LOKI_DERIVED)


def test_the_job_summary_stats_read_fields_every_summary_carries() -> None:
    _, metadata = shipped_names()
    board = json.loads((ROOT / "dashboards" / "calabi-sync-job.json").read_text(encoding="utf-8"))
    stats = [p for p in board["panels"] if p["type"] == "stat"]

    fields = [p["options"]["reduceOptions"]["fields"].strip("/^$") for p in stats]
    assert fields == [
        "records_synced",
        "records_failed",
        "bytes_synced",
        "duration_seconds",
        "streams_succeeded",
        "streams_failed",
    ]
    assert set(fields) <= metadata
