"""What a receiver's HTTP 400 says about the records it refused.

Loki answers a push with one refused entry or more with HTTP 400 and keeps the
rest. Its message (a ``google.rpc.Status``) names the reason per entry, and for
entries refused by the per-stream out-of-order window it also says how many
were refused and which ones came first::

    entry with timestamp 2026-11-30 02:10:40.274774016 +0000 UTC ignored, reason: 'entry too far behind,
    entry timestamp is: 2026-11-30T02:10:40Z, oldest acceptable timestamp is: 2026-11-30T04:10:40Z',
    ...
    user 'fake', total ignored: 15 out of 16 for stream: {connection="A", service_name="calabi-connect"}

Such an entry is refused only because of where it sits in its stream: the same
entry sent at a later time is taken. Entries Loki drops before they reach their
stream (older than ``reject_old_samples_max_age``, or invalid) are not in that
count; each gets its own answer when sent on its own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from .timeutil import parse_rfc3339

#: Reasons that depend on the stream's newest entry, not on the entry itself.
_BEHIND: Final = re.compile(r"entry too far behind|entry out of order")
_CUTOFF: Final = re.compile(
    r"oldest acceptable timestamp is: (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d))"
)
_COUNT: Final = re.compile(r"total ignored: (\d+) out of (\d+)")
# Go's time.Time.String(): "2026-11-30 02:10:40.274774016 +0000 UTC"
_LISTED: Final = re.compile(
    r"entry with timestamp (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d{1,9}))? ([+-]\d{2})(\d{2}) \S+"
    r" ignored, reason: '([^']*)'"
)
#: Loki prints the window's start to the second, truncated: the true start is up to this much later.
CUTOFF_RESOLUTION: Final = 1.0


@dataclass(frozen=True, slots=True)
class Split:
    """Which of the records sent to one stream, oldest first, met which fate, in this order.

    The ``unknown`` first records were dropped before they reached the stream, with no
    word on them, and are sent again on their own; the ``behind`` next were refused
    for their place in the stream; the rest was stored.
    """

    unknown: int = 0
    behind: int = 0


@dataclass(frozen=True, slots=True)
class Refusal:
    """A receiver's refusal, read."""

    #: Some entries were refused for their place in the stream (too far behind, out of order).
    behind: bool
    #: The oldest time the stream accepts, as the receiver named it (seconds, truncated), if it did.
    cutoff: float | None
    #: "total ignored: N out of M", if given.
    ignored: int | None
    out_of: int | None
    #: The refused entries the message lists, first ones first: (nanoseconds, reason).
    listed: tuple[tuple[int, str], ...]

    def split(self, sent_ns: Sequence[int]) -> Split | None:
        """Which records were refused, when the message says it exactly; None when it does not.

        Records sent in time order to one stream are refused by the out-of-order
        window from the oldest on; Loki counts them ("total ignored: N out of M") and
        lists the first ones. Records it dropped before the stream (too old, say) are
        not counted, M falling short of what was sent by as many; being the oldest,
        they come first. So the split is known when the listed times are those of the
        records right after them, and of no other run of records (times repeat within a
        second), and the refused block ends where Loki's cutoff says it does.

        >>> behind = read_refusal("entry with timestamp 1970-01-01 00:00:02 +0000 UTC ignored, reason: "
        ...     "'entry too far behind, entry timestamp is: 1970-01-01T00:00:02Z, oldest acceptable "
        ...     "timestamp is: 1970-01-01T01:00:00Z',\\nuser 'fake', total ignored: 1 out of 2 for stream: {}")
        >>> behind.split([1_000_000_000, 2_000_000_000, 7_200_000_000_000])
        Split(unknown=1, behind=1)
        >>> behind.split([3_000_000_000, 7_200_000_000_000]) is None
        True
        >>> behind.split([2_000_000_000, 2_000_000_000, 7_200_000_000_000]) is None  # listed at 0 or 1: unsure
        True
        """
        if not self.behind or self.ignored is None or self.out_of is None:
            return None
        if not 0 < self.ignored <= self.out_of <= len(sent_ns):
            return None
        if not self.listed or any(not _BEHIND.search(reason) for _, reason in self.listed):
            return None
        sent = list(sent_ns)
        if sent != sorted(sent):
            return None
        listed = [ns for ns, _ in self.listed]
        width = len(listed)
        at = [start for start in range(len(sent) - width + 1) if sent[start : start + width] == listed]
        dropped = len(sent) - self.out_of
        if at != [dropped]:
            return None
        end = dropped + self.ignored
        if self.cutoff is not None:
            cutoff = round(self.cutoff * 1e9)
            if sent[end - 1] >= cutoff + round(CUTOFF_RESOLUTION * 1e9) or (end < len(sent) and sent[end] < cutoff):
                return None
        return Split(unknown=dropped, behind=self.ignored)


def read_refusal(message: str) -> Refusal:
    """Read a refusal message (Loki's wording; anything else reads as a plain refusal)."""
    listed = tuple((_go_time_ns(m), m.group(5)) for m in _LISTED.finditer(message))
    cutoffs = [parse_rfc3339(m.group(1)) for m in _CUTOFF.finditer(message)]
    count = _COUNT.search(message)
    return Refusal(
        behind=bool(_BEHIND.search(message)),
        cutoff=max(cutoffs) if cutoffs else None,
        ignored=int(count.group(1)) if count else None,
        out_of=int(count.group(2)) if count else None,
        listed=listed,
    )


def _go_time_ns(match: re.Match[str]) -> int:
    """Nanoseconds since the epoch of a time printed by Go, exactly (a float would round)."""
    whole = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    offset = int(match.group(3)) * 3600 + (1 if match.group(3)[0] != "-" else -1) * int(match.group(4)) * 60
    fraction = int((match.group(2) or "0").ljust(9, "0"))
    return (int(whole.timestamp()) - offset) * 1_000_000_000 + fraction
