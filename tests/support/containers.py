"""Session fixtures for the tests that run images: the engine, the exporter's image, the servers' images.

Each is made once per run, on first use, and what the run built is removed at its end. On a machine
without a usable engine the tests skip saying why, and fail under ``CI=true``
(:func:`.real_components.missing`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from .container_engine import Engine, Unavailable, build_exporter_image, find_engine, server_images
from .real_components import missing


def _say(request: pytest.FixtureRequest, line: str) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.fixture(scope="session")
def container_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """podman or Docker, able to run a container here, with a Python base image."""
    try:
        engine = find_engine()
    except Unavailable as why:
        missing(str(why))
    for note in engine.notes:  # said in the run's output: what this run stood in for
        _say(request, f"containers: {note}")
    yield engine
    engine.cleanup()


@pytest.fixture(scope="session")
def exporter_image(container_engine: Engine) -> Iterator[str]:
    """The exporter's image, built from the Dockerfile under a tag of this run."""
    tag = f"localhost/calabi-connect-exporter:test-{uuid.uuid4().hex[:8]}"
    build_exporter_image(container_engine, tag)
    yield tag
    container_engine("rmi", "--force", tag, check=False)


@pytest.fixture(scope="session")
def compose_server_images(container_engine: Engine, request: pytest.FixtureRequest) -> list[str]:
    """The Prometheus, Alertmanager and Loki images docker-compose.yml pins: pulled, else stand-ins."""
    try:
        built = server_images(container_engine)
    except Unavailable as why:
        missing(str(why))
    for note in container_engine.notes[-len(built) :] if built else []:
        _say(request, f"containers: {note}")
    return built
