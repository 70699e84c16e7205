"""A small Prometheus registry: counters, gauges, histograms, text exposition format.

Written here rather than taken from prometheus_client because the hot path
only ever does `counter.value += n` on a slot attribute.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence


class Counter:
    __slots__ = ("help", "name", "value")

    def __init__(self, name: str, help: str) -> None:
        self.name = name
        self.help = help
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n


class Histogram:
    """Cumulative buckets in the Prometheus way; `observe_counts` merges counts made elsewhere."""

    __slots__ = ("bounds", "counts", "help", "name", "sum")

    def __init__(self, name: str, help: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.help = help
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_counts(self, counts: Sequence[int], total: float) -> None:
        for i, n in enumerate(counts[: len(self.counts)]):
            self.counts[i] += n
        self.sum += total

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {running}')
        running += self.counts[-1]
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {running}')
        lines.append(f"{self.name}_sum {self.sum}")
        lines.append(f"{self.name}_count {running}")
        return lines


class LabeledCounter:
    """A counter per label value, at most `limit` of them (the rest share `_other`)."""

    def __init__(self, name: str, help: str, label: str, limit: int) -> None:
        self.name = name
        self.help = help
        self.label = label
        self.limit = limit
        self.values: dict[str, int] = {}

    def inc(self, label: str, n: int = 1) -> None:
        if label not in self.values and len(self.values) >= self.limit:
            label = "_other"
        self.values[label] = self.values.get(label, 0) + n

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for value, n in sorted(self.values.items()):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'{self.name}{{{self.label}="{escaped}"}} {n}')
        return lines


class Metrics:
    def __init__(self) -> None:
        self._counters: list[Counter] = []
        self._gauges: list[tuple[str, str, Callable[[], float]]] = []
        self._families: list[Histogram | LabeledCounter] = []
        self._names: set[str] = set()

    def _claim(self, name: str) -> None:
        """One family per name: Prometheus refuses a scrape that declares one twice."""
        if name in self._names:
            raise ValueError(f"metric {name} is registered twice")
        self._names.add(name)

    def histogram(self, name: str, help: str, bounds: tuple[float, ...]) -> Histogram:
        self._claim(name)
        h = Histogram(name, help, bounds)
        self._families.append(h)
        return h

    def labeled_counter(self, name: str, help: str, label: str, limit: int) -> LabeledCounter:
        self._claim(name)
        c = LabeledCounter(name, help, label, limit)
        self._families.append(c)
        return c

    def counter(self, name: str, help: str) -> Counter:
        self._claim(name)
        c = Counter(name, help)
        self._counters.append(c)
        return c

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        self._claim(name)
        self._gauges.append((name, help, read))

    def render(self) -> str:
        lines: list[str] = []
        for c in self._counters:
            lines += [
                f"# HELP {c.name} {c.help}",
                f"# TYPE {c.name} counter",
                f"{c.name} {c.value}",
            ]
        for name, help, read in self._gauges:
            lines += [f"# HELP {name} {help}", f"# TYPE {name} gauge", f"{name} {read()}"]
        for family in self._families:
            lines += family.render()
        return "\n".join(lines) + "\n"
