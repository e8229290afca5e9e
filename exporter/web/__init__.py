"""The HTTP surface: a Flask app factory and one blueprint per surface."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
