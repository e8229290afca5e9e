"""Job records as the ingest API takes them."""

from __future__ import annotations

from typing import Any


def job(
    job_id: str, status: str = "succeeded", connection: str = "Salesforce → Snowflake", **fields: Any
) -> dict[str, Any]:
    """A job record with just enough to be valid."""
    return {"job_id": job_id, "connection_name": connection, "status": status, **fields}
