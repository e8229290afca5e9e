"""A clock the test moves by hand, injected wherever the exporter reads the time."""

from __future__ import annotations

T0 = 1_775_462_400.0  # 2026-04-06T08:00:00Z


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
