"""calabi-connect-exporter: sync job records in, Prometheus metrics out."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
