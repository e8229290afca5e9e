"""The OpenAPI document is valid OpenAPI 3, served as kept in the repository, and lists exactly the app's routes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from calabi_exporter.config import Config
from calabi_exporter.web import create_app
from openapi_spec_validator import validate

SPEC_FILE = Path(__file__).parent.parent / "exporter" / "openapi.json"


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
