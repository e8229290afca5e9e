"""Faults injected into a real store: what the exporter must survive."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from calabi_exporter.store import Store


@contextmanager
def writes_refused(store: Store) -> Iterator[None]:
    """The store's database refuses every write meanwhile (reads still work)."""
    database: Any = store.database
    if database.dialect.name == "sqlite":
        db = database.connection()  # this thread's: the test client serves requests on it
        db.execute("PRAGMA query_only = ON")
        try:
            yield
        finally:
            db.execute("PRAGMA query_only = OFF")
        return
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'writes refused by the test'; END $$"
        )
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT OR UPDATE OR DELETE ON meta EXECUTE FUNCTION refuse()")
        try:
            yield
        finally:
            conn.execute("DROP TRIGGER refuse ON meta")
            conn.execute("DROP FUNCTION refuse()")
