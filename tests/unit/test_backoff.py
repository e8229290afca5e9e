"""One retry rule for every sender: doubling steps, capped, drawn between half and the whole step."""

from __future__ import annotations

import pytest
from calabi_exporter.backoff import Backoff


def draws(*values: float) -> Backoff:
    given = iter(values)
    return Backoff(first=1.0, cap=8.0, retry_after_cap=300.0, jitter=lambda: next(given))


def test_each_failure_doubles_the_step_up_to_the_cap() -> None:
    backoff = Backoff(first=1.0, cap=8.0).without_jitter()

    assert [backoff.wait(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_the_wait_is_drawn_between_half_and_the_whole_step() -> None:
    backoff = draws(0.0, 0.5, 0.999)

    assert [backoff.wait(3), backoff.wait(3), backoff.wait(3)] == [2.0, 3.0, pytest.approx(3.998)]


@pytest.mark.parametrize(
    ("retry_after", "wait"),
    [
        pytest.param(120.0, 120.0, id="honoured, past the cap of the steps"),
        pytest.param(0.0, 1.0, id="zero is the first step, not a tight loop"),
        pytest.param(86400.0, 300.0, id="a day is five minutes"),
    ],
)
def test_a_servers_retry_after_replaces_the_drawn_wait_within_bounds(retry_after: float, wait: float) -> None:
    assert draws().wait(5, retry_after) == wait


def test_two_senders_that_failed_together_do_not_wait_alike() -> None:
    backoff = Backoff(first=1.0, cap=30.0)

    waits = {backoff.wait(4) for _ in range(20)}

    assert len(waits) > 1 and all(4.0 <= w < 8.0 for w in waits)
