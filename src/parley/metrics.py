"""A small Prometheus registry: counters and gauges, text exposition format.

Written here rather than taken from prometheus_client because the hot path
only ever does `counter.value += n` on a slot attribute.
"""

from __future__ import annotations

from collections.abc import Callable


class Counter:
    __slots__ = ("help", "name", "value")

    def __init__(self, name: str, help: str) -> None:
        self.name = name
        self.help = help
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n


class Metrics:
    def __init__(self) -> None:
        self._counters: list[Counter] = []
        self._gauges: list[tuple[str, str, Callable[[], float]]] = []

    def counter(self, name: str, help: str) -> Counter:
        c = Counter(name, help)
        self._counters.append(c)
        return c

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
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
        return "\n".join(lines) + "\n"
