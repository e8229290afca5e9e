"""The schema on SQLite: its column types, where it keeps the version, how it reads a store's layout.

``PRAGMA user_version`` holds the version (:data:`.migrations.SCHEMA_VERSION`), in
the same numbering as PostgreSQL's.
"""

from __future__ import annotations

from typing import Final

from .database import Tx
from .migrations import Layout
from .schema import SQLITE, Kind
from .schema_ddl import Rendering

RENDERING: Final = Rendering(
    engine=SQLITE,
    types={
        Kind.TEXT: "TEXT",
        Kind.INTEGER: "INTEGER",
        Kind.REAL: "REAL",
        Kind.FLAG: "INTEGER",  # 0 or 1
        # INTEGER affinity keeps a whole number as an integer and any other as a real.
        Kind.NUMBER: "INTEGER",
    },
    identity="INTEGER PRIMARY KEY AUTOINCREMENT",
    flag_values=("0", "1"),
    without_rowid=True,
)


class SQLiteSchema:
    """:class:`~.migrations.SchemaStore` of a SQLite file."""

    rendering = RENDERING

    def read_layout(self, tx: Tx) -> Layout:
        columns: dict[str, set[str]] = {}
        for table, column in tx.execute(
            "SELECT m.name, c.name FROM sqlite_master m JOIN pragma_table_info(m.name) c WHERE m.type = 'table'"
        ):
            columns.setdefault(str(table), set()).add(str(column))
        indexes = frozenset(str(row[0]) for row in tx.execute("SELECT name FROM sqlite_master WHERE type = 'index'"))
        return Layout({table: frozenset(names) for table, names in columns.items()}, indexes)

    def read_version(self, tx: Tx) -> int:
        return int(tx.execute("PRAGMA user_version").fetchone()[0])

    def write_version(self, tx: Tx, version: int) -> None:
        tx.execute(f"PRAGMA user_version = {int(version)}")


SQLITE_SCHEMA: Final = SQLiteSchema()
