"""A connection's usual schedule and volume, learned robustly from its own successes."""

from __future__ import annotations

import pytest
from calabi_exporter.detection import Usual, learn_schedule, learn_volume, overdue_threshold, score

T0 = 1_775_462_400.0
HOUR = 3600.0
DAY = 86_400.0


def times(*intervals: float, start: float = T0) -> list[float]:
    """Finish times separated by ``intervals``."""
    out = [start]
    for interval in intervals:
        out.append(out[-1] + interval)
    return out


def test_an_hourly_connection_is_expected_every_hour_and_overdue_after_two() -> None:
    schedule = learn_schedule(times(*[HOUR] * 10))

    assert schedule == Usual(3600.0, 0.0)
    assert overdue_threshold(schedule.median, schedule.spread) == 7200.0


def test_a_daily_connection_is_expected_every_day_and_overdue_after_a_day_and_a_half() -> None:
    schedule = learn_schedule(times(*[DAY] * 7))

    assert schedule == Usual(86400.0, 0.0)
    assert overdue_threshold(schedule.median, schedule.spread) == 129600.0


def test_an_outage_among_jittered_intervals_moves_neither_the_interval_nor_its_spread_much() -> None:
    schedule = learn_schedule(times(3500, 3600, 3700, 3600, 3650, 3550, 36000))

    assert schedule == Usual(3600.0, pytest.approx(1.4826 * 50))
    assert overdue_threshold(schedule.median, schedule.spread) == 7200.0


def test_a_connection_whose_intervals_vary_widely_gets_three_spreads_of_slack() -> None:
    schedule = learn_schedule(times(2 * HOUR, 6 * HOUR, 4 * HOUR, 8 * HOUR, 4 * HOUR))

    assert schedule == Usual(4 * HOUR, pytest.approx(1.4826 * 2 * HOUR))
    assert overdue_threshold(schedule.median, schedule.spread) == pytest.approx(4 * HOUR + 3 * 1.4826 * 2 * HOUR)


def test_five_intervals_are_needed_before_a_schedule_is_learned() -> None:
    assert learn_schedule(times(*[HOUR] * 4)) is None
    assert learn_schedule(times(*[HOUR] * 5)) == Usual(3600.0, 0.0)


def test_successes_at_the_same_second_make_no_interval_and_their_order_does_not_matter() -> None:
    finished = times(*[HOUR] * 5)

    assert learn_schedule([*reversed(finished), finished[2], finished[3]]) == Usual(3600.0, 0.0)
    assert learn_schedule([*finished[:5], finished[4]]) is None  # four intervals, the repeat adds none


def test_only_the_newest_fifty_intervals_count_so_a_changed_schedule_is_followed() -> None:
    daily_then_hourly = times(*[DAY] * 30, *[HOUR] * 50)

    assert learn_schedule(daily_then_hourly) == Usual(3600.0, 0.0)


def test_a_frequent_connection_gets_an_hour_of_slack_at_least() -> None:
    assert overdue_threshold(300.0) == 3900.0


def test_steady_volumes_with_noise_give_their_median_and_scaled_mad() -> None:
    usual = learn_volume([1000, 1010, 990, 1005, 995, 1020, 980, 1000, 1015, 985])

    assert usual == Usual(1000.0, pytest.approx(14.826))
    assert score(990, usual) == pytest.approx(-10 / 14.826)
    assert score(400, usual) == pytest.approx(-600 / 14.826)


def test_identical_volumes_have_a_spread_of_one_percent_so_one_record_less_is_no_collapse() -> None:
    usual = learn_volume([40000] * 10)

    assert usual == Usual(40000.0, 400.0)
    assert score(39999, usual) == -0.0025
    assert score(400, usual) == -99.0


def test_a_small_identical_volume_has_a_spread_of_one_record() -> None:
    assert learn_volume([50] * 10) == Usual(50.0, 1.0)


def test_ten_earlier_successes_are_needed_before_a_volume_is_judged() -> None:
    assert learn_volume([1000] * 9) is None
    assert learn_volume([1000] * 10) == Usual(1000.0, 10.0)


def test_a_connection_whose_syncs_usually_move_nothing_is_never_judged() -> None:
    assert learn_volume([0, 0, 0, 0, 0, 0, 0, 0, 5, 3]) is None
