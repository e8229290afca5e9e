"""The HTTP surface: a Flask app factory and one blueprint per surface."""

from __future__ import annotations

from .app import background_workers, create_app

__all__ = ["background_workers", "create_app"]
