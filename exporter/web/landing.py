"""``/``: what this is and where to look, as every Prometheus exporter answers its root.

Someone who opens the exporter's address in a browser (or a load balancer's
check of ``/``) gets the name, the version and links to the metrics, the health
endpoints and the API document instead of a 404. The links are relative, so
they still work behind a proxy that serves the exporter under a path prefix.
"""

from __future__ import annotations

from html import escape
from typing import Final

from flask import Blueprint, Response

from .. import __version__

bp = Blueprint("landing", __name__)

NAME: Final = "calabi-connect-exporter"
LINKS: Final = (
    ("metrics", "Metrics", "Prometheus scrapes this"),
    ("healthz", "Health", "200 while the process serves"),
    ("readyz", "Readiness", "200 when the store can be read and written"),
    ("api/v1/openapi.json", "API", "the HTTP API in OpenAPI 3.1"),
)


def page() -> str:
    """The landing page's HTML."""
    items = "".join(f'<li><a href="{href}">{escape(title)}</a>: {escape(what)}</li>' for href, title, what in LINKS)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{NAME}</title></head>\n'
        f"<body><h1>{NAME}</h1>\n"
        f"<p>Prometheus exporter for Calabi Connect sync jobs, version {escape(__version__)}.</p>\n"
        f"<ul>{items}</ul>\n"
        "</body></html>\n"
    )


@bp.get("/")
def landing() -> Response:
    """The landing page; always open, like the health endpoints (it holds no data)."""
    return Response(page(), status=200, content_type="text/html; charset=utf-8")
