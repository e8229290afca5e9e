"""Reading a vendor's JSON payload into a job record, with errors that name the vendor's own fields.

A source declares where each field of the job record is found in its payload
(record field -> payload path); the record is then validated by :func:`..model.parse_job`
like any other, so the same bounds hold for every way a job comes in. A
refused field is reported by its place in the payload (``data.connection.name``),
which is what the sender can find and fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model import Job, ValidationError, parse_job

#: A place in a JSON payload: the keys from the top object down.
Path = tuple[str, ...]


def dotted(path: Path) -> str:
    """``("data", "connection", "name")`` as the sender reads it: ``data.connection.name``."""
    return ".".join(path)


def pick(payload: Mapping[str, Any], path: Path) -> Any:
    """The value at ``path``, or None when a key on the way is missing or null.

    A value on the way that is not an object is the sender's mistake, refused
    naming the place it should have been an object.

    >>> pick({"data": {"connection": {"name": "Stripe → Postgres"}}}, ("data", "connection", "name"))
    'Stripe → Postgres'
    >>> pick({"data": None}, ("data", "jobId")) is None
    True
    >>> pick({"data": [1]}, ("data", "jobId"))
    Traceback (most recent call last):
    ...
    calabi_exporter.model.ValidationError: data must be an object
    """
    value: Any = payload
    for depth, key in enumerate(path):
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValidationError(dotted(path[:depth]), "must be an object")
        value = value.get(key)
    return value


def read_record(
    payload: Mapping[str, Any],
    places: Mapping[str, Path],
    given: Mapping[str, Any],
    *,
    latest: float,
    worked_out: Mapping[str, str] = {},
) -> Job:
    """The job record ``places`` read from ``payload`` plus the ``given`` fields, validated as any record is.

    An error names the payload's place for a field read from it, and for a field
    the source worked out itself (such as the status) the place ``worked_out`` gives.
    """
    record = {name: pick(payload, path) for name, path in places.items()}
    record.update(given)
    record = {name: value for name, value in record.items() if value is not None}
    try:
        return parse_job(record, latest=latest)
    except ValidationError as error:
        raise ValidationError(_place(error.field, places, worked_out), error.message) from None


def _place(field: str, places: Mapping[str, Path], worked_out: Mapping[str, str]) -> str:
    head, dot, rest = field.partition(".")
    if head in places:
        return dotted(places[head]) + dot + rest
    return worked_out.get(head, head) + dot + rest
