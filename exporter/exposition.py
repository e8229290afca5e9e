"""The lines of ``/metrics`` for a family of :mod:`.metric_families`, as ``prometheus_client`` writes them.

They are written here rather than by the library: with 10,000 connections ×
20 streams a scrape has over a million samples, and the library builds an
object per sample and re-validates and re-escapes every label of each (about
5 µs a sample). Label pairs repeat across families, so escaping each distinct
pair once keeps a large scrape well under a second. Tests hold the lines byte
for byte to what the library's ``generate_latest`` (and OpenMetrics encoder)
writes for the same families.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final, cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

from .metric_families import Family, Row

# The library's Go-compatible float formatting (untyped upstream).
_go_float = cast(Callable[[float], str], floatToGoString)
_EOF: Final = b"# EOF\n"
_LIBRARY_KINDS: Final = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def library_family(family: Family[Any]) -> Metric:
    """The family as a prometheus_client object without samples (its samples are appended by the caller)."""
    metric: Metric = _LIBRARY_KINDS[family.kind](family.base_name, family.help, labels=list(family.labels))
    return metric


def header(family: Family[Any], *, openmetrics: bool) -> bytes:
    """The family's ``# HELP`` and ``# TYPE`` lines, as the library writes them in that format.

    Written by the library once per family and format: the two formats name
    counters differently in their headers and escape help text differently.
    """
    encode = generate_openmetrics if openmetrics else generate_latest
    return encode(_Metrics([library_family(family)])).removesuffix(_EOF)


class _Metrics:
    """A collector yielding fixed metric objects, for the library's encoders."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics


class _Layout:
    """How one family's samples of one suffix are written: their name and their labels in written order."""

    __slots__ = ("keys", "name", "order")

    def __init__(self, family: Family[Any], suffix: str) -> None:
        sample_name = family.base_name + ("_total" if family.kind == "counter" else "")
        labels = family.sample_labels(suffix)
        self.name = sample_name + suffix
        self.order = tuple(sorted(range(len(labels)), key=lambda index: labels[index]))  # the library sorts them
        self.keys = labels


class LineWriter:
    """Sample lines as ``generate_latest`` writes them, each distinct label pair escaped once."""

    def __init__(self) -> None:
        self._pairs: dict[tuple[str, str], str] = {}
        self._numbers: dict[float, str] = {}
        self._layouts: dict[str, dict[str, _Layout]] = {}  # family name -> suffix -> layout

    def lines(self, family: Family[Any], rows: Iterable[Row]) -> tuple[str, int]:
        """The family's sample lines for ``rows``, and how many there are."""
        out: list[str] = []
        append = out.append
        pairs, numbers = self._pairs, self._numbers
        layouts = self._layouts.get(family.name)
        if layouts is None:
            layouts = self._layouts[family.name] = {}
        for suffix, values, value in rows:
            layout = layouts.get(suffix)
            if layout is None:
                layout = layouts[suffix] = _Layout(family, suffix)
            number = numbers.get(value)
            if number is None:
                number = numbers[value] = _go_float(value)
            if not values:
                append(f"{layout.name} {number}\n")
                continue
            keys = layout.keys
            parts = []
            for index in layout.order:
                item = (keys[index], values[index])
                text = pairs.get(item)
                if text is None:
                    text = pairs[item] = f'{item[0]}="{_escape_value(item[1])}"'
                parts.append(text)
            append(f"{layout.name}{{{','.join(parts)}}} {number}\n")
        return "".join(out), len(out)
