"""A batch read from the log: each room's new messages go out together, the acks after.

Real nodes on one embedded log (tests/unit/inprocess.py).
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from parley.gateway.hub import Hub
from parley.gateway.node import AckWaiter, Node
from parley.protocol.messages import Ack, ChatMessage
from tests.unit.inprocess import Opened, until


def pipelined(
    node: Node, user: str, room: str, bodies: list[str], session: Opened | None = None
) -> list[asyncio.Future[Ack]]:
    """Sends made without waiting for each ack, as a client may; with `session`,
    each ack is also written to it as the connection writes an `ack` frame."""
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[Ack]] = []
    for body in bodies:
        done: asyncio.Future[Ack] = loop.create_future()

        def acked(ack: Ack, done: asyncio.Future[Ack] = done) -> None:
            if session is not None:
                session.session.writer.send_json(
                    orjson.dumps({"type": "ack", "client_id": ack.client_id})
                )
            done.set_result(ack)

        def failed(code: object, message: str, done: asyncio.Future[Ack] = done) -> None:
            done.set_exception(AssertionError(f"send failed: {code} {message}"))

        node.send(user, room, uuid.uuid4().hex, body, AckWaiter(acked, failed))
        futures.append(done)
    return futures


async def member_of(node: Node, user: str, room: str) -> Opened:
    opened = await Opened(node, user).open()
    await node.subscribe(opened.session, room, None, "s1")
    await asyncio.sleep(0)
    return opened


async def test_pipelined_sends_reach_every_node_once_in_order_then_acked(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    await a.create_room("club", "Club", "alice", ["bob", "carol"])
    await a.create_room("den", "Den", "alice", ["bob"])
    alice = await member_of(a, "alice", "club")
    await a.subscribe(alice.session, "den", None, "s2")
    bob = await member_of(b, "bob", "club")
    carol = await member_of(a, "carol", "club")
    bodies = [f"m{i}" for i in range(40)]
    acks = await asyncio.wait_for(
        asyncio.gather(
            *pipelined(a, "alice", "club", bodies, alice),
            *pipelined(a, "alice", "den", ["d0", "d1"], alice),
        ),
        5,
    )
    await until(lambda: len(bob.frames("message")) == 40 and len(carol.frames("message")) == 40)
    await until(lambda: len(alice.frames("ack")) == 42)
    await asyncio.sleep(0.05)
    for opened in (bob, carol):
        got = opened.frames("message")
        assert [f["body"] for f in got] == bodies  # each once, in send order
        assert [f["seq"] for f in got] == sorted({f["seq"] for f in got})
        assert {f["room"] for f in got} == {"club"}  # nothing of "den"
    assert [a.seq for a in acks[:40]] == [f["seq"] for f in bob.frames("message")]
    # The sender's own session: each message before its ack.
    kinds = [(f["type"], f.get("client_id")) for f in alice.transport.frames()]
    for ack in acks:
        assert kinds.index(("message", ack.client_id)) < kinds.index(("ack", ack.client_id))


async def test_a_room_whose_delivery_fails_costs_neither_the_others_nor_the_acks(
    nodes: tuple[Node, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _b = nodes
    await a.create_room("club", "Club", "alice", ["bob"])
    await a.create_room("den", "Den", "alice", ["bob"])
    bob = await member_of(a, "bob", "den")
    real = Hub.deliver_batch

    def broken_for_club(hub: Hub, room: str, msgs: list[ChatMessage]) -> int:
        if room == "club":
            raise RuntimeError("a bug in one room's fan-out")
        return real(hub, room, msgs)

    monkeypatch.setattr(Hub, "deliver_batch", broken_for_club)
    acks = await asyncio.wait_for(
        asyncio.gather(
            *pipelined(a, "alice", "club", ["c0", "c1"]), *pipelined(a, "alice", "den", ["d0"])
        ),
        5,
    )
    assert [ack.room for ack in acks] == ["club", "club", "den"]  # every ack answered
    await until(lambda: len(bob.frames("message")) == 1)
    assert bob.frames("message")[0]["body"] == "d0"
