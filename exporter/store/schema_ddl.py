"""The DDL of the declared tables, in one engine's spelling (:class:`Rendering`).

What differs between the engines is data: the type of each logical kind, how
an identity key is written, a flag's literals, and whether SQLite's
``WITHOUT ROWID`` hint is kept. The statements are otherwise the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .schema import META_KEYS, Column, Index, Kind, Table


@dataclass(frozen=True, slots=True)
class Rendering:
    """How one engine spells the declaration: its column types and the little that differs in DDL."""

    engine: str
    types: Mapping[Kind, str]
    identity: str  # the whole definition after the name of an identity key column
    flag_values: tuple[str, str]  # false, true
    without_rowid: bool  # whether to keep SQLite's hint


def column_sql(rendering: Rendering, column: Column, *, inline_key: bool = False) -> str:
    """A column's definition; ``inline_key``: the table's only key column, declared with it."""
    if column.kind is Kind.IDENTITY:
        return f"{column.name} {rendering.identity}"
    parts = [column.name, rendering.types[column.kind]]
    if inline_key:
        parts.append("PRIMARY KEY")
    elif not column.nullable:
        parts.append("NOT NULL")
    if column.default is not None:
        value = rendering.flag_values[column.default] if column.kind is Kind.FLAG else str(column.default)
        parts.append(f"DEFAULT {value}")
    if column.unique:
        parts.append("UNIQUE")
    return " ".join(parts)


def create_table(rendering: Rendering, table: Table) -> str:
    inline = len(table.key) == 1
    lines = [column_sql(rendering, c, inline_key=inline and c.name == table.key[0]) for c in table.columns]
    if not inline:
        lines.append(f"PRIMARY KEY ({', '.join(table.key)})")
    rowid = " WITHOUT ROWID" if table.without_rowid and rendering.without_rowid else ""
    return f"CREATE TABLE IF NOT EXISTS {table.name} (\n    " + ",\n    ".join(lines) + f"\n){rowid}"


def add_column(rendering: Rendering, table: Table, column: Column) -> str:
    return f"ALTER TABLE {table.name} ADD COLUMN {column_sql(rendering, column)}"


def create_index(table: Table, index: Index) -> str:
    where = f" WHERE {index.where}" if index.where else ""
    return f"CREATE INDEX IF NOT EXISTS {index.name} ON {table.name} ({', '.join(index.columns)}){where}"


def seed_rows() -> str:
    """The counters every store has, written where missing (``ON CONFLICT``: both engines)."""
    values = ", ".join(f"('{key}', 0)" for key in META_KEYS)
    return f"INSERT INTO meta (key, value) VALUES {values} ON CONFLICT (key) DO NOTHING"
