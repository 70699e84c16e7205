"""Finding dead peers: WebSocket pings, spread evenly over time and sessions.

A client that vanished without a FIN (a laptop lid, a lost network) leaves a
session that nothing would ever close. The usual cure, aiohttp's per-socket
`heartbeat`, arms a timer per socket at its last frame: sockets that connect
together (a reconnect storm, a benchmark) are then pinged together, every 20
s, for as long as they live. In the big room that was 2,500 pings and pongs
within 2.4 s per node, and the messages sent then reached their last member
twice as late (bench/analysis.md). It also costs a timer handle per socket.

Here the node keeps its sessions in `BUCKETS` buckets, filled in turn, and
sweeps one bucket every `period / BUCKETS` seconds, so each session is looked
at once a period (PARLEY_PING_INTERVAL, 10 s) and the pings are spread
evenly, however the sessions came. At each look:

- something was heard since the last look: nothing to do;
- nothing was heard: ping it;
- nothing was heard since the ping: the peer is gone, drop it.

So a session that never speaks is pinged every two periods, after 10 to 20 s
of silence, and a dead one is dropped two to three periods after its last
frame (aiohttp's heartbeat=20 pinged after 20 s and dropped 10 s later).
Pings travel end to end, so they also keep quiet sockets open through
proxies that cut idle ones; TCP keepalives would not.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

logger = logging.getLogger(__name__)

PERIOD_S = 10.0
BUCKETS = 100


class Peer(Protocol):
    """What the sweep needs of a connection."""

    pinged: bool  # set by the sweep when it pings
    liveness_bucket: int

    def heard_since_look(self) -> bool:
        """Whether a frame came since the last look (and forget it: a new look starts)."""
        ...

    def ping(self) -> None: ...

    def drop_dead(self) -> None: ...


class Liveness:
    def __init__(self, period_s: float = PERIOD_S, buckets: int = BUCKETS) -> None:
        """`period_s`: how often each peer is looked at (PARLEY_PING_INTERVAL)."""
        self._buckets: list[set[Peer]] = [set() for _ in range(buckets)]
        self._tick_s = period_s / buckets
        self._next_fill = 0
        self._next_sweep = 0
        self.pings_sent = 0

    def add(self, peer: Peer) -> None:
        """Watch a peer, in the next bucket in turn."""
        peer.pinged = False
        peer.liveness_bucket = self._next_fill
        self._buckets[self._next_fill].add(peer)
        self._next_fill = (self._next_fill + 1) % len(self._buckets)

    def remove(self, peer: Peer) -> None:
        self._buckets[peer.liveness_bucket].discard(peer)

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)

    def sweep_next(self) -> None:
        """Look at the next bucket."""
        bucket = self._buckets[self._next_sweep]
        self._next_sweep = (self._next_sweep + 1) % len(self._buckets)
        for peer in list(bucket):
            try:
                if peer.heard_since_look():
                    peer.pinged = False
                elif not peer.pinged:
                    peer.pinged = True
                    self.pings_sent += 1
                    peer.ping()
                else:
                    bucket.discard(peer)
                    peer.drop_dead()
            except Exception:  # one peer's failure must not spare the rest
                logger.exception("liveness: looking at a peer failed")

    async def run(self) -> None:
        """One bucket per tick, on a fixed schedule: a late tick does not stretch the period.

        After a stall of the loop the schedule restarts from now rather than
        catching up in a burst: pongs that came during the stall are read
        first, and the buckets are not looked at all at once.
        """
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self._tick_s
            now = loop.time()
            if due < now:
                due = now
            await asyncio.sleep(due - now)
            self.sweep_next()
