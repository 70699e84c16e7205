"""Drops of every kind: the client resumes with no gap and no duplicate, and resends unacked."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.client import (
    Ack,
    Client,
    ClientClosed,
    ConnectionState,
    Message,
    Replaced,
    StateChanged,
    Subscribed,
)
from tests.client.support import Proxy, Recorder, connected
from tests.conftest import own_cluster
from tests.harness import Cluster


async def everything(client: Client, room: str) -> list[Message]:
    """The room's whole history, paged back with the client's `history`."""
    out: list[Message] = []
    before: int | None = None
    while True:
        page = await client.history(room, before=before, limit=100)
        out[:0] = page.messages
        if not page.has_more:
            return out
        before = page.messages[0].seq


async def settled(client: Client, events: Recorder, room: str) -> list[Message]:
    """Every message the client delivered for a room, once a last marker came through.

    Messages of a room arrive in seq order, so once the marker (sent last) is
    in, any duplicate of an earlier message would be in too.
    """
    ack = await client.send(room, "marker")
    await events.wait_for(lambda: any(m.id == ack.id for m in events.messages(room)), 60)
    return [m for m in events.messages(room) if m.id != ack.id]


def states(events: Recorder) -> list[ConnectionState]:
    return [e.state for e in events.of(StateChanged)]


async def test_resume_across_node_restart_without_gap_or_duplicate(cluster: Cluster) -> None:
    server = cluster.nodes[0]
    await cluster.api("alice").create_room("restart", ["bob"])
    async with (
        connected(server.url, "alice") as (alice, events),
        connected(server.url, "bob") as (bob, _),
    ):
        await alice.subscribe("restart")
        await asyncio.gather(*(bob.send("restart", f"before {i}") for i in range(15)))
        await events.wait_messages("restart", 15)
        await server.restart()  # 1001 to every session, then a new process on the same port
        # Sends made now wait for the reconnect when bob has not reconnected yet.
        await asyncio.gather(*(bob.send("restart", f"after {i}") for i in range(15)))
        got = await settled(alice, events, "restart")
        assert [m.body for m in got] == [f"before {i}" for i in range(15)] + [
            f"after {i}" for i in range(15)
        ]
        full = await everything(alice, "restart")
        assert [m.id for m in got] == [m.id for m in full[:-1]], "no gap, no duplicate"
        assert [s.resumed for s in events.of(Subscribed)] == [False, True]
        assert ConnectionState.RECONNECTING in states(events)
        assert alice.state is ConnectionState.CONNECTED


@pytest.fixture(params=["embedded", "kafka"])
async def capped(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    """A node that replays at most 5 messages on resume: the client must page back."""
    services = request.getfixturevalue("services") if request.param == "kafka" else None
    async with own_cluster(
        request.param, tmp_path, services, name="capped", PARLEY_REPLAY_CAP="5"
    ) as cluster:
        yield cluster


async def test_abrupt_drop_resumes_and_pages_back_past_the_replay_cap(capped: Cluster) -> None:
    server = capped.nodes[0]
    await capped.api("alice").create_room("gap", ["bob"])
    proxy = Proxy(server.port)
    await proxy.start()
    try:
        async with (
            connected(proxy.url, "alice") as (alice, events),
            connected(server.url, "bob") as (bob, _),
        ):
            await alice.subscribe("gap")
            for i in range(3):
                await bob.send("gap", f"seen {i}")
            await events.wait_messages("gap", 3)
            await proxy.cut()  # no close frame: an abnormal close (1006)
            await alice.wait_for_state(ConnectionState.RECONNECTING)
            missed = await asyncio.gather(*(bob.send("gap", f"missed {i}") for i in range(23)))
            await proxy.restore()
            await alice.wait_for_state(ConnectionState.CONNECTED)
            got = await settled(alice, events, "gap")
            assert [m.body for m in got] == [f"seen {i}" for i in range(3)] + [
                f"missed {i}" for i in range(23)
            ]
            assert [m.seq for m in got[3:]] == [a.seq for a in missed]
            full = await everything(alice, "gap")
            assert [m.id for m in got] == [m.id for m in full[:-1]]
            assert alice.last_seq("gap") == full[-1].seq
    finally:
        await proxy.close()


async def test_unacked_sends_are_resent_and_land_once_after_a_kill(cluster: Cluster) -> None:
    server = cluster.nodes[0]
    await cluster.api("alice").create_room("inflight", ["bob"])
    count = 300
    async with connected(server.url, "alice") as (alice, events):
        await alice.subscribe("inflight")
        sends: list[asyncio.Task[Ack]] = []
        in_flight = 0
        for burst in range(count // 20):
            for _ in range(20):
                n = len(sends)
                sends.append(
                    asyncio.create_task(alice.send("inflight", f"m{n}", client_id=f"c{n}"))
                )
            if burst != 7:
                await asyncio.sleep(0.01)
                continue
            # The burst is on the wire and the node is busy with it: kill it now.
            # (A few loop turns, not a timer: an idle node acks 20 sends in 2 ms.)
            for _ in range(3):
                await asyncio.sleep(0)
            in_flight = sum(1 for t in sends if not t.done())  # sent or queued, not acked
            await server.kill()  # SIGKILL: no goodbye, some sends taken but never acked
        # The last bursts were made while the node was down: they wait in the outbox.
        assert in_flight > 0, "the kill must catch sends in flight"
        await server.start()
        acks = await asyncio.wait_for(asyncio.gather(*sends), 90)
        assert [a.client_id for a in acks] == [f"c{i}" for i in range(count)]
        assert len({a.id for a in acks}) == count, "every send got its own message"
        assert alice.unacked == 0
        got = await settled(alice, events, "inflight")
        assert sorted(m.client_id for m in got) == sorted(f"c{i}" for i in range(count))
        assert [m.seq for m in got] == sorted(a.seq for a in acks), "each shown once, in order"
        stored = collections.Counter(m.client_id for m in await everything(alice, "inflight"))
        assert all(stored[f"c{i}"] == 1 for i in range(count)), "no message stored twice"
        by_id = {m.id: m for m in got}
        assert all(by_id[a.id].body == f"m{i}" for i, a in enumerate(acks))


async def test_replaced_connection_stops_instead_of_fighting_back(node: Cluster) -> None:
    url = node.nodes[0].url
    await node.api("alice").create_room("dev", [])
    async with connected(url, "alice", device="laptop") as (first, first_events):
        await first.subscribe("dev")
        async with connected(url, "alice", device="laptop") as (second, second_events):
            await first_events.wait_for(lambda: ConnectionState.CLOSED in states(first_events))
            assert first_events.of(Replaced)
            assert first.state is ConnectionState.CLOSED
            with pytest.raises(ClientClosed):
                await first.send("dev", "still here?")
            with pytest.raises(ClientClosed):
                await first.wait_for_state(ConnectionState.CONNECTED)
            await second.subscribe("dev")
            await second.send("dev", "the laptop is mine")
            await second_events.wait_messages("dev", 1)
            assert states(second_events) == [
                ConnectionState.CONNECTING,
                ConnectionState.CONNECTED,
            ]
