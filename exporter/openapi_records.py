"""The OpenAPI schemas of jobs, streams and log lines, written from the record table.

``exporter/openapi.json`` is kept by hand except for what this module writes:
the component schemas of the records (``JobRecord``, ``Stream``, ``JobSummary``,
``JobDetail``, ``LogLine``), the product webhook's payload, a log line as it is
posted, and the status and level query parameters. They come from the fields'
declarations (:mod:`.records`) and the bounds the parser holds them to, so a field
added to a record is in the document when it is regenerated, and a test fails
until it is. From the project root::

    python -m calabi_exporter.openapi_records -o exporter/openapi.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from .joblogs import LEVEL_ALIASES, LEVELS, LINE_FIELDS, MAX_LINES, LogLine
from .model import (
    FAILED_AT,
    FAILED_AT_MEANING,
    FINISHED_STATUSES,
    MAX_COUNT,
    MAX_SECONDS,
    STATUSES,
    WEBHOOK_PAYLOAD,
    Job,
    StreamResult,
)
from .records import Meaning, table
from .timeutil import RFC3339_PATTERN, format_rfc3339

#: Where the document is committed, relative to the project root.
DOCUMENT: Final = Path("exporter") / "openapi.json"

_SCHEMAS: Final = "#/components/schemas/"
_JOB_RECORD_DOC: Final = (
    "A job record as the product reports it; later records of the same job_id fill in and advance it. No text "
    "holds a NUL (\\u0000); totals added up from the streams stay within 2^53 - 1; a job holds at most 10,000 "
    "streams over all its records. Breaking one is a 400 (or, in a batch, an entry in errors) naming the field."
)
_JOB_TIME: Final = {
    "type": "string",
    "format": "date-time",
    "description": "the job's place in listings: queued, else started, else finished time, fixed when first seen",
}


def _time_rule() -> str:
    return f"RFC 3339 with an offset, between {format_rfc3339(946_684_800)} and now + max_clock_skew_seconds"


def _nullable(kind: str, m: Meaning) -> str | list[str]:
    return kind if m.required else [kind, "null"]


def _describe(m: Meaning, *parts: str) -> str:
    said = "; ".join(part for part in parts if part)
    return f"{m.doc} ({said})" if said else m.doc


def _choices(m: Meaning, choices: Sequence[str]) -> list[str | None]:
    return [*choices] if m.required else [*choices, None]


def input_property(m: Meaning, nested: dict[str, Any] | None = None) -> dict[str, Any]:
    """A field as a client may send it: its type, the bounds the parser holds it to, and its meaning."""
    if m.kind == "text":
        assert m.max_length is not None
        if m.pattern is not None:
            return {"type": "string", "pattern": m.pattern, "description": _describe(m, m.pattern_rule, m.rule)}
        schema: dict[str, Any] = {"type": _nullable("string", m)}
        not_blank = m.required and not m.blank
        if not_blank:
            schema |= {"minLength": 1, "maxLength": m.max_length, "pattern": "\\S"}
        else:
            schema["maxLength"] = m.max_length
        blank = "not blank" if not_blank else ""
        redacted = "secrets in it are redacted before it is stored" if m.redacted else ""
        return schema | {"description": _describe(m, blank, m.rule, redacted)}
    if m.kind in ("status", "choice"):
        return {"type": _nullable("string", m), "enum": _choices(m, m.choices), "description": _describe(m, m.rule)}
    if m.kind == "count":
        bounds = {"minimum": 0, "maximum": MAX_COUNT}
        return {"type": _nullable("integer", m), **bounds, "description": _describe(m, m.rule)}
    if m.kind == "seconds":
        bounds = {"minimum": 0, "exclusiveMaximum": MAX_SECONDS}
        return {"type": _nullable("number", m), **bounds, "description": _describe(m, m.rule)}
    if m.kind == "time":
        return {
            "type": _nullable("string", m),
            "format": "date-time",
            "description": _describe(m, _time_rule(), m.rule),
            "pattern": RFC3339_PATTERN,
        }
    if m.kind == "level":
        return _level_input(m)
    assert nested is not None and m.kind == "records"
    return {"type": ["array", "null"], "maxItems": m.max_items, "description": _describe(m, m.rule), "items": nested}


def _level_input(m: Meaning) -> dict[str, Any]:
    aliases = list(LEVEL_ALIASES)
    spellings = "|".join("".join(f"[{c.upper()}{c.lower()}]" for c in name) for name in (*LEVELS, *aliases))
    said = (
        f"{', '.join(LEVELS[:-1])} or {LEVELS[-1]} in any case; "
        f"{', '.join(aliases[:-1])} and {aliases[-1]} are read as their equivalents"
    )
    return {"type": "string", "description": _describe(m, said), "pattern": f"^({spellings})$"}


def output_property(m: Meaning, nested: str | None = None) -> dict[str, Any]:
    """A field as the exporter writes it in a document: times as RFC 3339, absent values as null."""
    nullable = not m.required
    if m.kind in ("text", "level"):
        schema: dict[str, Any] = {"type": "string" if not nullable else ["string", "null"]}
        if m.kind == "level":
            schema["enum"] = list(LEVELS)
    elif m.kind in ("status", "choice"):
        schema = {"type": _nullable("string", m), "enum": _choices(m, m.choices)}
    elif m.kind == "count":
        schema = {"type": _nullable("integer", m)}
    elif m.kind == "seconds":
        schema = {"type": _nullable("number", m)}
    elif m.kind == "time":
        schema = {"type": _nullable("string", m), "format": "date-time"}
    else:
        assert nested is not None
        schema = {"type": "array", "items": {"$ref": _SCHEMAS + nested}}
    return schema | {"description": m.doc}


def _object(properties: dict[str, Any], required: Sequence[str], *, closed: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": list(required)}
    if closed:
        schema["additionalProperties"] = False
    return schema | {"properties": properties}


def _with_failed_at(properties: dict[str, Any], failed_at: dict[str, Any]) -> dict[str, Any]:
    """``properties`` with ``failed_at`` after ``finished_at``, where the product's payload puts it."""
    result: dict[str, Any] = {}
    for name, schema in properties.items():
        result[name] = schema
        if name == "finished_at":
            result[FAILED_AT] = failed_at
    return result


def job_record() -> dict[str, Any]:
    """``JobRecord``: a job as it is posted, with its streams."""
    stream = {
        name: input_property(m) for name, m in table(StreamResult) if m.kind != "records"
    }  # a stream holds no nested records
    stream_schema = _object(stream, [n for n, m in table(StreamResult) if m.required], closed=True)
    properties = {name: input_property(m, stream_schema) for name, m in table(Job)}
    properties = _with_failed_at(properties, input_property(FAILED_AT_MEANING))
    required = [name for name, m in table(Job) if m.required]
    return {"type": "object", "description": _JOB_RECORD_DOC} | _object(properties, required, closed=True)


def webhook_payload() -> dict[str, Any]:
    """The product's "Webhook (custom)" payload: the job record's fields it carries, in its order."""
    record = job_record()
    return _object({name: record["properties"][name] for name in WEBHOOK_PAYLOAD}, record["required"])


def _job_output(*, streams: bool) -> tuple[dict[str, Any], list[str]]:
    properties = {name: output_property(m, "Stream") for name, m in table(Job) if streams or m.kind != "records"}
    failed_at = {"type": "string", "format": "date-time", "description": "failed jobs only: the finish time"}
    return _with_failed_at(properties, failed_at), [name for name in properties]


def job_summary() -> dict[str, Any]:
    """``JobSummary``: a job in a listing, without its streams, with its place in listings."""
    properties, required = _job_output(streams=False)
    return _object(properties | {"job_time": _JOB_TIME}, [*required, "job_time"])


def job_detail() -> dict[str, Any]:
    """``JobDetail``: a job with its streams and one page of its log lines."""
    properties, required = _job_output(streams=True)
    logs = _object(
        {
            "lines": {"type": "array", "items": {"$ref": _SCHEMAS + "LogLine"}},
            "next_cursor": {"type": ["string", "null"]},
        },
        ["lines", "next_cursor"],
    )
    return _object(properties | {"logs": logs}, [*required, "logs"])


def stream() -> dict[str, Any]:
    """``Stream``: one stream of a job, as documents write it."""
    properties = {name: output_property(m) for name, m in table(StreamResult)}
    return _object(properties, list(properties))


def log_line() -> dict[str, Any]:
    """``LogLine``: a stored log line, with its id and when it was received."""
    properties = {
        "id": {"type": "integer", "description": "The line's place among the job's lines"},
        "received_at": {"type": "string", "format": "date-time", "description": "When the exporter received it"},
        **{name: output_property(m) for name, m in table(LogLine)},
    }
    return _object(properties, list(properties))


def log_lines_input() -> dict[str, Any]:
    """A JSON list of log lines as they are posted."""
    properties = {name: input_property(m) for name, m in table(LogLine)}
    assert set(properties) == LINE_FIELDS
    items = _object(properties, [name for name, m in table(LogLine) if m.required], closed=True)
    return {"type": "array", "items": items, "minItems": 1, "maxItems": MAX_LINES}


def _parameter_enum(operation: dict[str, Any], name: str, values: Sequence[str]) -> None:
    for parameter in operation["parameters"]:
        if parameter["name"] == name:
            parameter["schema"]["items"]["enum"] = list(values)
            return
    raise KeyError(f"no {name} parameter")


def render(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with every part that lists a record's fields written from the table."""
    schemas = document["components"]["schemas"]
    schemas["JobRecord"] = job_record()
    schemas["Stream"] = stream()
    schemas["JobSummary"] = job_summary()
    schemas["LogLine"] = log_line()
    schemas["JobDetail"] = job_detail()
    paths = document["paths"]
    paths["/webhooks/calabi"]["post"]["requestBody"]["content"]["application/json"]["schema"] = webhook_payload()
    logs = paths["/api/v1/jobs/{job_id}/logs"]["post"]["requestBody"]["content"]["application/json"]
    logs["schema"] = log_lines_input()
    _parameter_enum(paths["/api/v1/jobs"]["get"], "status", STATUSES)
    _parameter_enum(paths["/api/v1/jobs/{job_id}"]["get"], "level", LEVELS)
    _parameter_enum(paths["/api/v1/connections"]["get"], "last_status", FINISHED_STATUSES)
    return document


def dumps(document: dict[str, Any]) -> str:
    """The document as the repository keeps it."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m calabi_exporter.openapi_records",
        description="Rewrite the record schemas of the OpenAPI document from the record table.",
    )
    parser.add_argument("-o", "--output", type=Path, default=DOCUMENT, help=f"the document to rewrite ({DOCUMENT})")
    args = parser.parse_args(argv)
    path: Path = args.output
    path.write_text(dumps(render(json.loads(path.read_text(encoding="utf-8")))), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
