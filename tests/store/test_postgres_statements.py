"""How the shared SQL reaches PostgreSQL: numbered placeholders, and no rows read from a plain write."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from calabi_exporter.store import Store, StoreError
from calabi_exporter.store.database import Tx
from calabi_exporter.store.postgres import _statement


def test_question_marks_become_numbered_placeholders_and_percent_signs_stay() -> None:
    sql = "SELECT job_id FROM jobs WHERE connection_name = ? AND job_id LIKE '%-1' AND status IN (?, ?)"
    assert _statement(sql) == (
        b"SELECT job_id FROM jobs WHERE connection_name = $1 AND job_id LIKE '%-1' AND status IN ($2, $3)",
        True,
    )


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        ("INSERT INTO meta (key, value) VALUES (?, ?)", False),
        ("UPDATE meta SET value = ? WHERE key = ?", False),
        ("DELETE FROM dead_letters WHERE dead_at < ? RETURNING 1", True),
        ("  select count(*) FROM jobs", True),
        ("WITH x AS (SELECT 1) SELECT * FROM x", True),
        ("EXPLAIN SELECT 1", True),
    ],
)
def test_a_statement_gives_rows_when_it_is_a_query_or_returns_them(sql: str, rows: bool) -> None:
    assert _statement(sql)[1] is rows


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_reading_rows_of_a_write_without_returning_is_refused_and_undone(
    make_store: Callable[..., Store], tmp_path: Path
) -> None:
    store = make_store(tmp_path)

    def read_a_write(tx: Tx) -> object:
        tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("probe", 7))
        return tx.execute("UPDATE meta SET value = ? WHERE key = ?", (8, "probe")).fetchall()

    with pytest.raises(StoreError, match="returns no rows"):
        store.database.submit(read_a_write)
    with store.database.read() as tx:
        assert tx.execute("SELECT count(*) FROM meta WHERE key = ?", ("probe",)).fetchone()[0] == 0


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_cursors_reused_across_transactions_read_each_transactions_own_rows(
    make_store: Callable[..., Store], tmp_path: Path
) -> None:
    store = make_store(tmp_path, pool_size=1)  # one connection: every transaction reuses its cursors
    for value in range(12):
        store.database.submit(
            lambda tx, value=value: tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (f"k{value}", value))
        )

    def read_several(tx: Tx, count: int) -> list[int]:
        """Every query goes out before any result is read (in a write: pipeline mode)."""
        cursors = [tx.execute("SELECT value FROM meta WHERE key = ?", (f"k{v}",)) for v in range(count)]
        return [cursor.fetchone()[0] for cursor in cursors]

    in_reads = []
    in_writes = []
    for count in range(1, 13):
        with store.database.read() as tx:
            in_reads.append(read_several(tx, count))
        in_writes.append(store.database.submit(lambda tx, count=count: read_several(tx, count)))
    assert in_reads == in_writes == [list(range(n)) for n in range(1, 13)]
