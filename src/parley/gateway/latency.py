"""Produce → fan-out latency of the messages this node hands to its sessions.

The producing node stamps each message with its clock (`ts`); the latency is
how long after that this node read it and queued its frame to the room's
sessions. Kept two ways: a histogram at this node's /metrics, and per-room
bucket counts that the node reports every few seconds in `fanout` events for
the analytics worker, which adds up every node's reports.
"""

from __future__ import annotations

import bisect

from parley.log.records import LATENCY_BUCKETS_MS
from parley.metrics import Metrics


class FanoutLatency:
    def __init__(self, metrics: Metrics) -> None:
        self._histogram = metrics.histogram(
            "parley_delivery_latency_seconds",
            "produce to fan-out latency of this node's deliveries",
            tuple(b / 1000 for b in LATENCY_BUCKETS_MS),
        )
        self._rooms: dict[str, list[int]] = {}  # buckets, +Inf, then the sum in ms

    def observe(self, room: str, latency_ms: int) -> None:
        latency_ms = max(0, latency_ms)
        i = bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)
        h = self._histogram
        h.counts[i] += 1
        h.sum += latency_ms / 1000
        counts = self._rooms.get(room)
        if counts is None:
            counts = self._rooms[room] = [0] * (len(LATENCY_BUCKETS_MS) + 2)
        counts[i] += 1
        counts[-1] += latency_ms

    def take(self) -> dict[str, list[int]]:
        """The per-room counts since the last call."""
        rooms, self._rooms = self._rooms, {}
        return rooms
