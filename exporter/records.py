"""The record table: each field of a job, a stream and a log line declared once, with its meaning.

A record's dataclass is its table. Each field is declared with one of the
constructors below (:func:`text`, :func:`count`, :func:`seconds`, :func:`time`,
:func:`status`, :func:`choice`, :func:`level`, :func:`records`), which put a
:class:`Meaning` in the field's metadata: its kind, what it means, its bounds.
Everything else is read from there: the fields the ingest API accepts and how
each is parsed (:mod:`.model`), the JSON documents (:mod:`.documents`), the
store's columns (:mod:`.store.rows`), the OpenAPI schemas
(:mod:`.openapi_records`) and ``docs/records.md`` (:mod:`.records_reference`).
Adding a field to a record is one declaration plus its meaning.

This module is pure: it knows kinds and bounds, not the records themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import Field, dataclass, field, fields
from functools import cache
from typing import Any, Final, Literal

Kind = Literal["text", "choice", "status", "level", "count", "seconds", "time", "records"]

#: The metadata key a field's :class:`Meaning` is kept under.
KEY: Final = "calabi_record"


@dataclass(frozen=True, slots=True)
class Meaning:
    """What one field of a record is: its kind, its meaning, and the bounds input is held to.

    ``rule`` is a sentence about input that the kind does not say (``only on a
    finished job``); ``blank`` lets a required text be empty or blank; ``pattern``
    and ``pattern_rule`` are a grammar a text must match and how an error states
    it; ``summary`` marks the job's Summary, as the product shows it; ``shipped``
    a field the ``job_summary`` log event carries as an attribute (every Summary
    field is).
    """

    kind: Kind
    doc: str
    required: bool = False
    max_length: int | None = None
    max_items: int | None = None
    choices: tuple[str, ...] = ()
    blank: bool = False
    pattern: str | None = None
    pattern_rule: str = ""
    redacted: bool = False
    summary: bool = False
    shipped: bool = False
    rule: str = ""


def _declare(meaning: Meaning, *, default: Any = None) -> Any:
    metadata = {KEY: meaning}
    if meaning.required:
        return field(metadata=metadata)
    if default is tuple:
        return field(default_factory=tuple, metadata=metadata)
    return field(default=default, metadata=metadata)


def text(
    doc: str,
    *,
    max_length: int,
    required: bool = False,
    blank: bool = False,
    redacted: bool = False,
    pattern: str | None = None,
    pattern_rule: str = "",
    shipped: bool = False,
    rule: str = "",
) -> Any:
    """A text field of at most ``max_length`` characters; a required one must not be blank unless ``blank``."""
    return _declare(
        Meaning(
            "text",
            doc,
            required=required,
            max_length=max_length,
            blank=blank,
            redacted=redacted,
            pattern=pattern,
            pattern_rule=pattern_rule,
            shipped=shipped,
            rule=rule,
        )
    )


def choice(doc: str, choices: tuple[str, ...], *, rule: str = "") -> Any:
    """One of ``choices``, sent in any case and stored lower-cased."""
    return _declare(Meaning("choice", doc, choices=choices, rule=rule))


def status(doc: str, choices: tuple[str, ...], *, required: bool = False) -> Any:
    """A lifecycle status, one of ``choices`` in any case, stored lower-cased."""
    return _declare(Meaning("status", doc, required=required, choices=choices))


def level(doc: str, choices: tuple[str, ...]) -> Any:
    """A log level, one of ``choices`` or an alias of one, in any case; stored upper-cased."""
    return _declare(Meaning("level", doc, required=True, choices=choices))


def count(doc: str, *, summary: bool = False, rule: str = "") -> Any:
    """A whole number of rows, bytes, streams or attempts, from 0 to the largest a float holds exactly."""
    return _declare(Meaning("count", doc, summary=summary, shipped=summary, rule=rule))


def seconds(doc: str, *, summary: bool = False, rule: str = "") -> Any:
    """A duration in seconds, at least 0."""
    return _declare(Meaning("seconds", doc, summary=summary, shipped=summary, rule=rule))


def time(doc: str, *, shipped: bool = False, rule: str = "") -> Any:
    """A moment: RFC 3339 with an offset outside, epoch seconds inside."""
    return _declare(Meaning("time", doc, shipped=shipped, rule=rule))


def records(doc: str, *, max_items: int, rule: str = "") -> Any:
    """A list of nested records (a job's streams), at most ``max_items`` of them."""
    return _declare(Meaning("records", doc, max_items=max_items, rule=rule), default=tuple)


def meaning(item: Field[Any]) -> Meaning:
    """The meaning a field was declared with; a field declared without one is a bug, named here."""
    try:
        found = item.metadata[KEY]
    except KeyError:
        raise TypeError(f"field {item.name} is declared without its meaning") from None
    assert isinstance(found, Meaning)
    return found


@cache
def table(record: type) -> tuple[tuple[str, Meaning], ...]:
    """A record's fields, in declaration order, each with its meaning.

    Read once per record type: validation asks for it for every job and
    stream, and building it again each time made ingest slower.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Example:
    ...     rows: int | None = count("Rows written")
    >>> table(Example)
    (('rows', Meaning(kind='count', doc='Rows written', required=False, max_length=None, max_items=None, \
choices=(), blank=False, pattern=None, pattern_rule='', redacted=False, summary=False, shipped=False, rule='')),)
    """
    return tuple((item.name, meaning(item)) for item in fields(record))


def names(record: type, *, kinds: tuple[Kind, ...] = ()) -> tuple[str, ...]:
    """A record's field names in declaration order; with ``kinds``, only those of these kinds."""
    return tuple(name for name, m in table(record) if not kinds or m.kind in kinds)


def scalars(record: type) -> Iterator[tuple[str, Meaning]]:
    """A record's fields other than nested records: the columns of its row."""
    return ((name, m) for name, m in table(record) if m.kind != "records")
