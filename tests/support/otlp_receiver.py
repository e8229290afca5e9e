"""A real OTLP/HTTP logs receiver on loopback that decodes what it gets, as Loki would.

It answers with the statuses queued in ``answers`` (then 200), each with
headers and, if given, a body of its own (``(400, {"Content-Type": "text/html"},
b"...")``, as a proxy would send); it refuses requests holding a record whose
body contains ``refuse_marker`` with HTTP 400 while storing the request's other
records, which is what Loki does when it rejects some lines of a push; and it
answers 200 with an OTLP ``partial_success`` for records whose body contains
``reject_marker``, storing the others, as a collector that drops some does.
"""

from __future__ import annotations

import gzip
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from .capture_servers import LoopbackHttp, reply

REFUSAL = "stream '{connection=\"Salesforce → Snowflake\"}' has structured metadata too large"
PARTIAL = "1 log record dropped: attribute value over the collector's limit"


def _marked(record: Received, marker: str | None) -> bool:
    return marker is not None and marker in record.body


def _value(any_value: dict[str, Any]) -> Any:
    if "stringValue" in any_value:
        return any_value["stringValue"]
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "doubleValue" in any_value:
        return float(any_value["doubleValue"])
    if "boolValue" in any_value:
        return any_value["boolValue"]
    return any_value


def _attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _value(item.get("value", {})) for item in items}


@dataclass
class Received:
    """One decoded log record with its resource."""

    resource: dict[str, Any]
    attributes: dict[str, Any]
    body: str
    severity_number: int
    severity_text: str
    time_unix_nano: int
    observed_time_unix_nano: int


@dataclass
class Receiver(LoopbackHttp):
    port: int = 0
    answers: deque[tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes]] = field(default_factory=deque)
    refuse_marker: str | None = None
    reject_marker: str | None = None
    records: list[Received] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/otlp/v1/logs"

    def on_post(self, request: BaseHTTPRequestHandler, body: bytes) -> None:
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportLogsServiceRequest()
        message.ParseFromString(body)
        decoded = decode(message)
        with self.lock:
            self.requests += 1
            answer = self.answers.popleft() if self.answers else (200, {})
            status, headers = answer[0], dict(answer[1])
            payload = answer[2] if len(answer) == 3 else b""
            if status == 200:
                refused = [r for r in decoded if _marked(r, self.refuse_marker)]
                rejected = [r for r in decoded if _marked(r, self.reject_marker)]
                self.records += [r for r in decoded if r not in refused and r not in rejected]
                if refused:  # Loki keeps the rest
                    status = 400
                elif rejected:
                    partial = ExportLogsPartialSuccess(rejected_log_records=len(rejected), error_message=PARTIAL)
                    payload = ExportLogsServiceResponse(partial_success=partial).SerializeToString()
        if status == 400 and len(answer) == 2:  # Loki answers a protobuf google.rpc.Status naming the stream
            payload = Status(code=3, message=REFUSAL).SerializeToString()
        headers.setdefault("Content-Type", "application/x-protobuf")
        reply(request, status, headers, payload)


def decode(request: ExportLogsServiceRequest) -> list[Received]:
    out: list[Received] = []
    data = MessageToDict(request)
    for resource_logs in data.get("resourceLogs", []):
        resource = _attributes(resource_logs.get("resource", {}).get("attributes", []))
        for scope_logs in resource_logs.get("scopeLogs", []):
            for record in scope_logs.get("logRecords", []):
                out.append(
                    Received(
                        resource=resource,
                        attributes=_attributes(record.get("attributes", [])),
                        body=_value(record.get("body", {})),
                        severity_number=_severity_number(record.get("severityNumber")),
                        severity_text=record.get("severityText", ""),
                        time_unix_nano=int(record.get("timeUnixNano", 0)),
                        observed_time_unix_nano=int(record.get("observedTimeUnixNano", 0)),
                    )
                )
    return out


def _severity_number(value: Any) -> int:
    from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber

    if isinstance(value, str):
        return int(SeverityNumber.Value(value))
    return int(value or 0)
