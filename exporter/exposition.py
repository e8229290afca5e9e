"""Sample lines of ``/metrics``, as ``prometheus_client.generate_latest`` writes them.

They are rendered here rather than by the library: with 1,000 connections × 20 streams a
scrape has well over 100,000 samples, and the library re-validates and
re-escapes every label of every sample (about 5 µs each). Label pairs repeat
across families, so escaping each distinct pair once keeps a large scrape well
under a second. :mod:`.scrape` builds the ``/metrics`` body from these lines;
tests hold it byte for byte to what the library writes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from prometheus_client.utils import floatToGoString

# The library's Go-compatible float formatting (untyped upstream).
_go_float = cast(Callable[[float], str], floatToGoString)


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class LineWriter:
    """Sample lines as ``generate_latest`` writes them, each distinct label pair escaped once."""

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, str], str] = {}
        self._numbers: dict[float, str] = {}

    def line(self, name: str, labels: dict[str, str], value: float, timestamp: object = None) -> str:
        if labels:
            parts = []
            for key in sorted(labels):
                item = (key, labels[key])
                text = self._pairs.get(item)
                if text is None:
                    text = self._pairs[item] = f'{key}="{_escape_value(item[1])}"'
                parts.append(text)
            head = f"{name}{{{','.join(parts)}}}"
        else:
            head = name
        number = self._numbers.get(value)
        if number is None:
            number = self._numbers[value] = _go_float(value)
        if timestamp is not None:
            return f"{head} {number} {int(float(timestamp) * 1000):d}\n"  # type: ignore[arg-type]
        return f"{head} {number}\n"
