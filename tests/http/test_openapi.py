"""The OpenAPI document is valid OpenAPI 3, served as kept in the repository, and lists exactly the app's routes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from calabi_exporter.config import Config
from calabi_exporter.joblogs import LEVEL_ALIASES, LEVELS, MAX_LINES, MAX_MESSAGE, parse_json
from calabi_exporter.model import (
    MAX_CONNECTION_NAME,
    MAX_COUNT,
    MAX_SECONDS,
    MAX_STREAM_NAME,
    MAX_STREAMS,
    MAX_TEXT,
    PLATFORMS,
    STATUSES,
    ValidationError,
)
from calabi_exporter.sources import airbyte, fivetran
from calabi_exporter.timeutil import RFC3339_PATTERN
from calabi_exporter.web import create_app
from calabi_exporter.web.ingest import MAX_RECORDS
from openapi_spec_validator import validate

from tests.support.paths import ROOT

SPEC_FILE = ROOT / "exporter" / "openapi.json"


def test_the_document_validates_as_openapi_3() -> None:
    document = json.loads(SPEC_FILE.read_text(encoding="utf-8"))

    validate(document)  # raises on any violation

    assert document["openapi"].startswith("3.")


def test_every_route_the_app_serves_is_documented_and_nothing_else(tmp_path: Path) -> None:
    app = create_app(Config(data_dir=str(tmp_path / "d")))
    served = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    document = json.loads(SPEC_FILE.read_text(encoding="utf-8"))
    documented = {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }

    assert served == documented


def test_the_api_serves_the_file_from_the_repository(tmp_path: Path) -> None:
    client = create_app(Config(data_dir=str(tmp_path / "d"))).test_client()

    response = client.get("/api/v1/openapi.json")

    assert response.status_code == 200
    assert response.get_json() == json.loads(SPEC_FILE.read_text(encoding="utf-8"))


def test_the_limits_the_document_states_are_the_ones_the_code_enforces() -> None:
    document = json.loads(SPEC_FILE.read_text(encoding="utf-8"))
    schemas = document["components"]["schemas"]
    job = schemas["JobRecord"]["properties"]
    batch = document["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    lines = document["paths"]["/api/v1/jobs/{job_id}/logs"]["post"]["requestBody"]["content"]["application/json"]

    assert {option.get("maxItems") for option in batch["oneOf"] if option.get("type") == "array"} == {MAX_RECORDS}
    assert batch["oneOf"][2]["properties"]["jobs"]["maxItems"] == MAX_RECORDS
    assert lines["schema"]["maxItems"] == MAX_LINES
    assert lines["schema"]["items"]["properties"]["message"]["maxLength"] == MAX_MESSAGE
    assert job["streams"]["maxItems"] == MAX_STREAMS
    assert job["streams"]["items"]["properties"]["name"]["maxLength"] == MAX_STREAM_NAME
    assert job["connection_name"]["maxLength"] == MAX_CONNECTION_NAME
    assert job["error_summary"]["maxLength"] == MAX_TEXT
    assert {job[name]["maximum"] for name in ("records_synced", "records_failed", "bytes_synced")} == {MAX_COUNT}
    assert job["duration_seconds"]["exclusiveMaximum"] == MAX_SECONDS
    assert job["status"]["enum"] == list(STATUSES)


def test_every_error_answer_is_documented_with_the_error_schema() -> None:
    document = json.loads(SPEC_FILE.read_text(encoding="utf-8"))

    error_schemas = {
        (path, method, status): response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for status, response in operation["responses"].items()
        if status[0] in "45" and path != "/readyz"  # readiness answers with its own status document
    }

    assert set(error_schemas.values()) == {"Error", "IngestRefusal"}
    assert document["components"]["schemas"]["IngestRefusal"]["allOf"] == [{"$ref": "#/components/schemas/Error"}]
    assert {status for _, _, status in error_schemas} >= {"400", "401", "404", "413", "414", "415", "431", "503", "507"}


def test_every_documented_timestamp_is_read_with_the_servers_own_grammar() -> None:
    document = json.loads(SPEC_FILE.read_text(encoding="utf-8"))
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("format") == "date-time" and "pattern" in node:
                found.append(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document["components"]["schemas"]["JobRecord"])
    walk(document["paths"])

    assert len(found) == 7  # four in a job record, two in the webhook, one in a log line
    assert set(found) == {RFC3339_PATTERN}


def test_the_documented_log_level_pattern_takes_exactly_the_levels_the_server_reads() -> None:
    document = json.loads(SPEC_FILE.read_text(encoding="utf-8"))
    content = document["paths"]["/api/v1/jobs/{job_id}/logs"]["post"]["requestBody"]["content"]
    pattern = re.compile(content["application/json"]["schema"]["items"]["properties"]["level"]["pattern"])
    candidates = [*LEVELS, *LEVEL_ALIASES, "warn", "Error", "tRaCe", "", "LOUD", "INFO ", "WARNINGS"]

    def reads(level: str) -> bool:
        try:
            parse_json([{"level": level, "message": "m"}])
        except ValidationError:
            return False
        return True

    assert {c for c in candidates if pattern.fullmatch(c)} == {c for c in candidates if reads(c)}


def test_the_documented_kinds_of_a_source_delivery_are_the_ones_the_sources_count() -> None:
    schema = json.loads(SPEC_FILE.read_text())["components"]["schemas"]["SourceDelivery"]

    assert set(schema["properties"]["kind"]["enum"]) == {*airbyte.KINDS, *fivetran.KINDS}


def test_the_documented_platforms_of_a_connection_are_the_ones_a_job_may_name() -> None:
    schema = json.loads(SPEC_FILE.read_text())["components"]["schemas"]["Connection"]

    assert schema["properties"]["platform"]["enum"] == list(PLATFORMS)
