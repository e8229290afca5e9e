"""What a connection usually does, learned from its own successful jobs: its schedule and its volume.

A fixed threshold fits no fleet: three days without a success is a long outage
for an hourly connection and a normal weekend for a weekly one, and 40 records
is a normal day for one connection and a broken extract for another. The store
holds every job, so the exporter learns each connection's usual interval
between successes and its usual records per success, and the alert rules
compare the newest values with them (``CalabiSyncOverdue``, ``CalabiSyncVolumeDrop``).

Both estimates are robust: the median and the median absolute deviation (MAD,
scaled by 1.4826 to read as a standard deviation for normal data), so one
outage or one full re-sync among fifty jobs moves neither. Both need enough
history before they say anything; a connection without it is held to the fixed
freshness threshold alone. Pure functions: the planner feeds them the stored
jobs (:mod:`.ingest_plan`), the scrape shows what they learned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

#: Successful jobs the estimates read: the newest 51, so 50 intervals (a few days of an hourly
#: connection, two months of a daily one): recent enough to follow a changed schedule.
LEARN_JOBS: Final = 51
#: Intervals needed before a schedule is learned (six successes).
MIN_INTERVALS: Final = 5
#: Earlier successes needed before the newest one is judged against them.
MIN_VOLUME_JOBS: Final = 10
#: Scales a MAD to a standard deviation's size for normally distributed values.
MAD_SCALE: Final = 1.4826
#: Slack beyond the expected interval before a connection is overdue: half an interval, never under an
#: hour (a sync that runs long or waits for a worker is not an outage), and three spreads for a
#: connection whose intervals vary.
MIN_SLACK_SECONDS: Final = 3600.0
SLACK_SHARE: Final = 0.5
SLACK_SPREADS: Final = 3.0
#: The smallest spread of a volume: 1 % of the median, and one record, so that a connection that
#: moves the same count every time does not call one record less a collapse.
MIN_SPREAD_SHARE: Final = 0.01
MIN_SPREAD_RECORDS: Final = 1.0


@dataclass(frozen=True, slots=True)
class Usual:
    """A robust estimate: the median, and the spread around it (scaled MAD)."""

    median: float
    spread: float


def robust(values: Sequence[float]) -> Usual:
    """The median of ``values`` and their scaled median absolute deviation.

    >>> robust([10, 11, 12, 13, 1000])
    Usual(median=12, spread=1.4826)
    """
    middle = _median(sorted(values))
    return Usual(middle, MAD_SCALE * _median(sorted([abs(v - middle) for v in values])))


def _median(ordered: Sequence[float]) -> float:
    """The median of values in order (``statistics.median`` sorts again: this runs at every new success)."""
    half = len(ordered) // 2
    return ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2


def learn_schedule(finished_at: Sequence[float]) -> Usual | None:
    """The usual interval between successes, from their finish times (any order); None with too few.

    Only the newest :data:`LEARN_JOBS` count. Two successes at the same second
    (a record posted twice under two ids) make no interval.
    """
    times = sorted(set(finished_at))[-LEARN_JOBS:]
    intervals = [later - earlier for earlier, later in pairwise(times)]
    if len(intervals) < MIN_INTERVALS:
        return None
    return robust(intervals)


def overdue_threshold(interval: float, spread: float = 0.0) -> float:
    """Time after the last success beyond which a connection with this schedule is overdue.

    >>> overdue_threshold(3600.0), overdue_threshold(86400.0)
    (7200.0, 129600.0)
    """
    return interval + max(interval * SLACK_SHARE, MIN_SLACK_SECONDS, SLACK_SPREADS * spread)


def learn_volume(records: Sequence[int]) -> Usual | None:
    """The usual records of a success, from earlier successes' counts; None with too few, or usually empty.

    A connection whose syncs usually move nothing (median 0) has no volume to
    drop from: it is never judged.
    """
    if len(records) < MIN_VOLUME_JOBS:
        return None
    usual = robust([float(r) for r in records])
    if usual.median <= 0:
        return None
    return Usual(usual.median, max(usual.spread, MIN_SPREAD_SHARE * usual.median, MIN_SPREAD_RECORDS))


def score(value: float, usual: Usual) -> float:
    """How many spreads ``value`` lies above (positive) or below (negative) the usual."""
    return (value - usual.median) / usual.spread
