"""Retry waits, one rule for every background sender.

The log shipper, the S3 export and webhook delivery all retry the same way:
after the n-th failure in a row they wait ``first × 2^(n-1)``, capped, drawn
between half and the whole of that ("equal jitter"): workers or replicas that
failed together do not come back together, and none retries sooner than half
its step. A server's ``Retry-After`` replaces the drawn wait, kept within
``[first, retry_after_cap]`` so that "0" is no tight loop and "a day" no stall.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Backoff:
    first: float
    cap: float
    retry_after_cap: float | None = None  # None: the cap
    jitter: Callable[[], float] = field(default=random.random, compare=False)  # a draw in [0, 1)

    def wait(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` failures in a row (1 for the first)."""
        if retry_after is not None:
            return min(max(retry_after, self.first), self.cap if self.retry_after_cap is None else self.retry_after_cap)
        step = min(self.cap, self.first * 2.0 ** max(failures - 1, 0))
        return step / 2 + step / 2 * self.jitter()

    def without_jitter(self) -> Backoff:
        """The same rule waiting the whole step every time (for exact tests)."""
        return Backoff(self.first, self.cap, self.retry_after_cap, jitter=lambda: 1.0)
