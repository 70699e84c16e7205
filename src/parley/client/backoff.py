"""Jittered exponential backoff between reconnection attempts.

"Equal jitter": attempt n waits between half and all of
`min(maximum, initial * factor**n)`. The random half spreads the clients of a
restarted node over time instead of bringing them back in one burst; the fixed
half keeps any one client from retrying in a tight loop.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum or self.factor < 1:
            raise ValueError("backoff needs 0 < initial <= maximum and factor >= 1")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before attempt number `attempt` (0 for the first retry)."""
        ceiling = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return ceiling / 2 + rand() * ceiling / 2
