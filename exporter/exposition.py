"""Rendering the registry for ``/metrics``.

The Prometheus text format is rendered here rather than by
``prometheus_client.generate_latest``: with 1,000 connections × 20 streams a
scrape has well over 100,000 samples, and the library re-validates and
re-escapes every label of every sample (about 5 µs each). Label pairs repeat
across families, so escaping each distinct pair once keeps a large scrape well
under a second. The output is byte-for-byte what ``generate_latest`` writes
(a test holds the two together). :mod:`.scrape` builds the ``/metrics`` body
from these lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# The library's Go-compatible float formatting (untyped upstream).
_go_float = cast(Callable[[float], str], floatToGoString)

# The library's own suffixes for OpenMetrics-only samples; they go last, as gauges.
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")
_TYPE_MUNGING = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


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


def render_text(registry: Collector) -> bytes:
    """The Prometheus text format (0.0.4) of everything ``registry`` collects."""
    line = LineWriter().line
    out: list[str] = []

    for metric in registry.collect():
        name, kind = metric.name, metric.type
        if kind == "counter":
            name += "_total"
        elif kind == "info":
            name += "_info"
        kind = _TYPE_MUNGING.get(kind, kind)
        help_text = _escape_help(metric.documentation)
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
        deferred: dict[str, list[str]] = {}
        om_names = {metric.name + s: s for s in _OM_SUFFIXES}
        for sample in metric.samples:
            suffix = om_names.get(sample.name)
            rendered = line(sample.name, sample.labels, sample.value, sample.timestamp)
            if suffix is None:
                out.append(rendered)
            else:
                deferred.setdefault(suffix, []).append(rendered)
        for suffix, lines in sorted(deferred.items()):
            out.append(f"# HELP {metric.name}{suffix} {help_text}\n# TYPE {metric.name}{suffix} gauge\n")
            out.extend(lines)
    return "".join(out).encode("utf-8")
