"""What a Prometheus user expects of any exporter: a landing page, the process's own metrics, and ``--help``."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser

import requests
from calabi_exporter import __version__
from flask.testing import FlaskClient

from tests.support.exporter_process import ExporterProcess
from tests.support.jobs import job
from tests.support.samples import parse_samples


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs.extend(value or "" for name, value in attrs if tag == "a" and name == "href")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_landing_page_names_the_exporter_and_links_what_it_serves(client: FlaskClient) -> None:
    response = client.get("/")

    assert (response.status_code, response.content_type) == (200, "text/html; charset=utf-8")
    page = Links()
    page.feed(response.get_data(as_text=True))
    assert page.hrefs == ["metrics", "healthz", "readyz", "api/v1/openapi.json"]
    assert f"version {__version__}" in "".join(page.text)
    for href in page.hrefs:  # relative links: they work behind a proxy's path prefix too
        assert client.get("/" + href).status_code == 200, href


def test_the_landing_page_is_open_whatever_tokens_are_set(exporter_process: Callable[..., ExporterProcess]) -> None:
    exporter = exporter_process(
        env={"CALABI_INGEST_TOKENS": "i" * 20, "CALABI_READ_TOKENS": "r" * 20, "CALABI_METRICS_TOKENS": "m" * 20}
    )

    assert requests.get(exporter.url + "/", timeout=10).status_code == 200
    assert requests.get(exporter.url + "/metrics", timeout=10).status_code == 401


def test_every_scrape_carries_the_serving_processs_own_metrics(
    exporter_process: Callable[..., ExporterProcess],
) -> None:
    exporter = exporter_process()
    assert requests.post(exporter.url + "/api/v1/jobs", json=job("j1"), timeout=10).status_code == 200

    samples = exporter.scrape()

    assert samples.value("process_start_time_seconds") > 0
    assert samples.value("process_resident_memory_bytes") > 0
    assert samples.value("process_open_fds") > 0
    assert samples.value("process_max_fds") > 0
    assert {dict(labels)["implementation"] for labels in samples.family("python_info")} == {"CPython"}
    assert samples.family("python_gc_collections_total") != {}
    assert samples.value("calabi_sync_jobs_total", connection="Salesforce → Snowflake", status="succeeded") == 1
    # calabi_exporter_series counts them too: it is every sample of the scrape, itself included.
    assert samples.value("calabi_exporter_series") == len(samples)


def test_the_process_families_are_typed_as_the_library_types_them(client: FlaskClient) -> None:
    text = client.get("/metrics").get_data(as_text=True)

    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    assert types["process_cpu_seconds_total"] == "counter"
    assert types["process_start_time_seconds"] == "gauge"
    assert types["python_gc_objects_collected_total"] == "counter"
    assert parse_samples(text).value("process_cpu_seconds_total") >= 0
