"""Scraped samples keyed by name and labels, so a test asserts exact values."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

RUNTIME_PREFIXES = ("process_", "python_")  # the serving process's own families, in every scrape


class Samples(dict[tuple[str, frozenset[tuple[str, str]]], float]):
    """Scraped samples keyed by name and labels, for exact assertions."""

    def get_value(self, name: str, **labels: str) -> float | None:
        return self.get((name, frozenset(labels.items())))

    def value(self, name: str, **labels: str) -> float:
        found = self.get_value(name, **labels)
        assert found is not None, f"no sample {name}{labels}"
        return found

    def family(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        return {labels: v for (sample, labels), v in self.items() if sample == name}

    def store_samples(self) -> Samples:
        """The samples made from the store, without the serving process's own (``process_*``, ``python_*``)."""
        return Samples({key: v for key, v in self.items() if not key[0].startswith(RUNTIME_PREFIXES)})


def parse_samples(text: str) -> Samples:
    samples = Samples()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples
