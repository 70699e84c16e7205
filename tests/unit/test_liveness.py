"""The liveness sweep: who is pinged, who is dropped, and that pings are spread."""

from __future__ import annotations

import asyncio
import time

from parley.gateway.liveness import Liveness


class FakePeer:
    def __init__(self, answers: bool = False) -> None:
        self.heard = True  # as a connection: its opening handshake
        self.pinged = False
        self.liveness_bucket = -1
        self.answers = answers
        self.pings = 0
        self.dropped = False

    def heard_since_look(self) -> bool:
        heard, self.heard = self.heard, False
        return heard

    def ping(self) -> None:
        self.pings += 1
        if self.answers:
            self.heard = True  # its pong arrives before the next look

    def drop_dead(self) -> None:
        self.dropped = True


def sweep_periods(liveness: Liveness, buckets: int, periods: int) -> list[int]:
    """Sweep `periods` whole periods; the pings sent at each tick."""
    per_tick = []
    for _ in range(periods * buckets):
        before = liveness.pings_sent
        liveness.sweep_next()
        per_tick.append(liveness.pings_sent - before)
    return per_tick


def test_peers_that_came_together_are_pinged_spread_over_the_period() -> None:
    liveness = Liveness(period_s=10.0, buckets=100)
    peers = [FakePeer(answers=True) for _ in range(1000)]
    for peer in peers:
        liveness.add(peer)
    first = sweep_periods(liveness, 100, 1)
    assert sum(first) == 0  # the opening handshake counts as heard
    second = sweep_periods(liveness, 100, 1)
    # every peer pinged once, ten at each of the hundred ticks: never in a burst
    assert sum(second) == 1000 and set(second) == {10}
    assert all(p.pings == 1 for p in peers)


def test_a_peer_that_answers_stays_and_is_pinged_every_other_period() -> None:
    liveness = Liveness(period_s=10.0, buckets=4)
    peer = FakePeer(answers=True)
    liveness.add(peer)
    sweep_periods(liveness, 4, 10)
    assert not peer.dropped
    assert peer.pings == 5
    assert len(liveness) == 1


def test_a_peer_that_speaks_every_period_is_never_pinged() -> None:
    liveness = Liveness(period_s=10.0, buckets=4)
    peer = FakePeer()
    liveness.add(peer)
    for _ in range(10):
        peer.heard = True  # a frame from the client between two looks
        sweep_periods(liveness, 4, 1)
    assert peer.pings == 0 and not peer.dropped


def test_a_silent_peer_is_pinged_then_dropped_two_to_three_periods_after_its_last_frame() -> None:
    liveness = Liveness(period_s=10.0, buckets=4)
    peer = FakePeer(answers=False)
    liveness.add(peer)
    sweep_periods(liveness, 4, 1)  # heard: the handshake
    assert peer.pings == 0 and not peer.dropped
    sweep_periods(liveness, 4, 1)
    assert peer.pings == 1 and not peer.dropped
    sweep_periods(liveness, 4, 1)
    assert peer.dropped and peer.pings == 1
    assert len(liveness) == 0  # forgotten once dropped
    sweep_periods(liveness, 4, 3)
    assert peer.pings == 1


def test_a_late_pong_still_saves_the_peer() -> None:
    """Heard at any time before the look after the ping is in time."""
    liveness = Liveness(period_s=10.0, buckets=2)
    peer = FakePeer(answers=False)
    liveness.add(peer)
    sweep_periods(liveness, 2, 2)
    assert peer.pings == 1
    peer.heard = True  # the pong, just before the next look
    sweep_periods(liveness, 2, 1)
    assert not peer.dropped


def test_a_removed_peer_is_left_alone() -> None:
    liveness = Liveness(period_s=10.0, buckets=3)
    gone, kept = FakePeer(), FakePeer()
    liveness.add(gone)
    liveness.add(kept)
    liveness.remove(gone)
    sweep_periods(liveness, 3, 4)
    assert gone.pings == 0 and not gone.dropped
    assert kept.dropped


def test_a_dead_peer_goes_two_to_three_periods_after_its_last_frame_wherever_it_sits() -> None:
    """Peers in every bucket, silent from a tick at random: each is dropped
    after two to three periods, never sooner, never later."""
    buckets = 10
    liveness = Liveness(period_s=10.0, buckets=buckets)
    peers = [FakePeer() for _ in range(buckets)]
    for peer in peers:
        liveness.add(peer)
    last_frame: dict[int, int] = {}
    dropped_at: dict[int, int] = {}
    for tick in range(8 * buckets):
        for i, peer in enumerate(peers):
            if tick < 2 * buckets + 3 * i:  # peer i speaks until its own tick
                peer.heard = True
                last_frame[i] = tick
        liveness.sweep_next()
        for i, peer in enumerate(peers):
            if peer.dropped and i not in dropped_at:
                dropped_at[i] = tick
    for i, peer in enumerate(peers):
        assert peer.dropped and peer.pings == 1
        silent_for = dropped_at[i] - last_frame[i]
        assert 2 * buckets <= silent_for <= 3 * buckets, (i, silent_for)


class Failing(FakePeer):
    def ping(self) -> None:
        raise RuntimeError("socket gone")


def test_a_peer_that_fails_spares_none_of_the_others() -> None:
    liveness = Liveness(period_s=10.0, buckets=1)
    peers = [FakePeer(), Failing(), FakePeer()]
    for peer in peers:
        liveness.add(peer)
    liveness.sweep_next()  # all heard: the handshakes
    liveness.sweep_next()  # all pinged; the second raises
    assert peers[0].pings == 1 and peers[2].pings == 1
    liveness.sweep_next()
    assert all(p.dropped for p in peers)


async def test_the_sweep_keeps_its_pace_and_does_not_burst_after_a_stall() -> None:
    liveness = Liveness(period_s=0.2, buckets=4)  # a tick every 50 ms
    looked: list[float] = []
    loop = asyncio.get_running_loop()

    class Counted(FakePeer):
        def heard_since_look(self) -> bool:
            looked.append(loop.time())
            return True

    liveness.add(Counted())  # bucket 0: looked at every 4th tick
    for _ in range(3):
        liveness.add(Counted())  # one in each other bucket: every tick looks once
    task = asyncio.create_task(liveness.run())
    await asyncio.sleep(0.26)
    time.sleep(0.3)  # noqa: ASYNC251 - the point: the loop stalls for six ticks
    stalled_at = loop.time()
    await asyncio.sleep(0.12)
    task.cancel()
    before = [t for t in looked if t < stalled_at - 0.3]
    after = [t for t in looked if t >= stalled_at]
    assert 2 <= len(before) <= 6  # about a look per tick
    assert len(after) <= 4  # no burst of the six missed ticks, at most the pace
