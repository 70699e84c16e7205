"""Steady chat traffic through the faults: many users in many rooms over the gateways.

`Traffic` runs simulated users (tests/faults/user.py), each a member of a few
rooms of a `Topology`, spread over the gateways, and feeds them messages at a
steady rate (or as fast as they are acked). Their records are judged by
tests/faults/checker.py.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tests.faults.user import Endpoint, Outgoing, SimClient, Stats

# The shape of the traffic ---------------------------------------------------------


@dataclass(frozen=True)
class Topology:
    """Who is in which room: user i is in rooms i, i+3 and i+7 (mod rooms)."""

    rooms: tuple[str, ...]
    user_rooms: Mapping[str, tuple[str, ...]]

    @classmethod
    def make(cls, users: int = 20, rooms: int = 10, per_user: int = 3, tag: str = "f") -> Topology:
        offsets = (0, 3, 7, 1, 5, 9, 2, 4, 6, 8)[:per_user]
        names = tuple(f"{tag}r{j:02d}" for j in range(rooms))
        user_rooms = {
            f"{tag}u{i:02d}": tuple(names[(i + o) % rooms] for o in offsets) for i in range(users)
        }
        return cls(names, user_rooms)

    def members(self, room: str) -> list[str]:
        return [u for u, rooms in self.user_rooms.items() if room in rooms]

    def room_members(self) -> dict[str, list[str]]:
        return {room: self.members(room) for room in self.rooms}


# The run ------------------------------------------------------------------------------


class Traffic:
    """Many users in many rooms, spread over the gateways, sending at `rate` msgs/s.

    `rate=0` saturates instead: every user keeps `2 * window` messages queued,
    so the throughput is what the deployment (and this process) can do.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        topology: Topology,
        rate: float,
        *,
        window: int = 10,
        seed: int = 7,
    ) -> None:
        self.topology = topology
        self.rate = rate
        self.stats = Stats()
        self.stats.created.append(0.0)  # message numbers start at 1
        self.stats.room_size = {room: len(users) for room, users in topology.room_members().items()}
        self.clients = [
            SimClient(user, rooms, endpoints, i % len(endpoints), self.stats, window)
            for i, (user, rooms) in enumerate(topology.user_rooms.items())
        ]
        self._rng = random.Random(seed)
        self._tasks: list[asyncio.Task[None]] = []
        self._generator: asyncio.Task[None] | None = None
        self.t0 = 0.0
        self.marks: list[tuple[str, float]] = []
        self._rebase = False
        self.window = window

    def mark(self, name: str) -> float:
        """Note when something happened (seconds since the start); returns the monotonic time."""
        now = time.monotonic()
        self.marks.append((name, round(now - self.t0, 2)))
        return now

    def sent(self) -> int:
        return len(self.stats.created) - 1

    def acked(self) -> int:
        return len(self.stats.ack_at)

    async def start(self, timeout: float = 60.0) -> None:
        """Connect every user, subscribe it to its rooms, then start sending."""
        self.t0 = time.monotonic()
        self._tasks = [asyncio.create_task(c.run()) for c in self.clients]
        await self.all_ready(timeout)
        self.mark("traffic")
        self._generator = asyncio.create_task(self._generate())

    async def all_ready(self, timeout: float) -> None:
        """Wait until every user is connected and subscribed to all its rooms."""
        try:
            async with asyncio.timeout(timeout):
                for c in self.clients:
                    await c.ready.wait()
        except TimeoutError:
            late = [c.user for c in self.clients if not c.ready.is_set()]
            raise AssertionError(f"users not subscribed after {timeout} s: {late}") from None

    def _new_message(self, client: SimClient) -> None:
        n = len(self.stats.created)
        self.stats.created.append(time.monotonic())
        client.enqueue(Outgoing(self._rng.choice(client.rooms), n))

    async def _generate(self) -> None:
        began = time.monotonic()
        if self.rate <= 0:
            while True:
                for c in self.clients:
                    while c.backlog() < 2 * self.window:
                        self._new_message(c)
                await asyncio.sleep(0.01)
        base, self._rebase = self.sent(), False
        while True:
            if self._rebase:  # a new rate: its schedule starts now
                began, base, self._rebase = time.monotonic(), self.sent(), False
            due = began + (self.sent() - base) / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._new_message(self._rng.choice(self.clients))

    def set_rate(self, rate: float) -> None:
        """Pace at `rate` msgs/s from now on (a traffic started paced, rate > 0)."""
        assert rate > 0 and self.rate > 0
        self.rate, self._rebase = rate, True

    async def run_for(self, seconds: float) -> None:
        """Let the traffic flow for a while (the scenario's duration, not a wait for an event)."""
        await asyncio.sleep(seconds)

    async def stop_sending(self) -> None:
        if self._generator is not None:
            self._generator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._generator
            self._generator = None
        self.mark("stopped sending")

    def done(self) -> bool:
        """Every message acked, and as many deliveries as the acked messages owe their rooms."""
        return (
            all(c.backlog() == 0 for c in self.clients)
            and self.stats.delivered >= self.stats.expected
        )

    async def settle(self, timeout: float = 300.0, stall: float = 30.0) -> None:
        """Wait until `done()`.

        Gives up when nothing was acked or delivered for `stall` seconds (stuck),
        or at `timeout`: what is still missing then is reported by `check()`,
        which is what the tests assert on. A backlog that drains slowly (a
        loaded machine after an outage) is waited for; a stuck server is not.
        """
        began = last_change = time.monotonic()
        progress = -1
        while time.monotonic() - began < timeout and time.monotonic() - last_change < stall:
            if self.done():
                break
            now = self.acked() + self.stats.delivered
            if now != progress:
                progress, last_change = now, time.monotonic()
            await asyncio.sleep(0.25)
        self.mark("settled")

    async def close(self) -> None:
        if self._generator is not None:
            await self.stop_sending()
        await asyncio.gather(*(c.stop() for c in self.clients))
        if not self._tasks:
            return
        _, stuck = await asyncio.wait(self._tasks, timeout=15)
        for t in stuck:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if stuck:
            raise AssertionError(f"{len(stuck)} simulated users did not stop within 15 s")

    # Timing figures -----------------------------------------------------------------------

    def acks_between(self, start: float, end: float) -> int:
        lo, hi = self.stats.between(self.stats.ack_at, start, end)
        return hi - lo

    def deliveries_between(self, start: float, end: float) -> int:
        lo, hi = self.stats.between(self.stats.delivery_at, start, end)
        return hi - lo

    def errors_between(self, start: float, end: float) -> int:
        lo, hi = self.stats.between(self.stats.error_at, start, end)
        return hi - lo

    def first_ack_after(self, moment: float) -> float | None:
        i = bisect.bisect_left(self.stats.ack_at, moment)
        return self.stats.ack_at[i] if i < len(self.stats.ack_at) else None

    def worst_wait(self, created_from: float) -> float:
        """The longest any message created from then on waited for its ack (first send → ack)."""
        s = self.stats
        return max(
            (w for at, w in zip(s.ack_at, s.ack_wait, strict=True) if at - w >= created_from),
            default=0.0,
        )

    def longest_ack_gap(self, start: float, end: float) -> float:
        lo, hi = self.stats.between(self.stats.ack_at, start, end)
        points = [start, *self.stats.ack_at[lo:hi], end]
        return max((b - a for a, b in itertools.pairwise(points)), default=0.0)

    async def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll a condition on the recorded state; the seconds it took (fails at the timeout)."""
        began = time.monotonic()
        while not condition():
            if time.monotonic() - began > timeout:
                raise AssertionError(f"not within {timeout} s: {what}")
            await asyncio.sleep(0.05)
        return time.monotonic() - began
