"""The hub: local sessions by room and user, fan-out exactly once per session.

Sessions write through real SessionWriters to a fake transport, so what a
test reads back is the bytes a socket would have been given.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from parley.gateway.hub import Hub
from parley.gateway.session import Session
from parley.gateway.writer import Flusher, SessionWriter
from parley.protocol.messages import ChatMessage
from tests.unit.fakes import FakeTransport

_ids = itertools.count()


@dataclass
class Peer:
    session: Session
    transport: FakeTransport
    closes: list[tuple[int, str]] = field(default_factory=list)

    def seqs(self, room: str | None = None) -> list[int]:
        return [
            int(f["seq"])
            for f in self.transport.frames()
            if f["type"] == "message" and (room is None or f["room"] == room)
        ]


def peer(flusher: Flusher, user: str) -> Peer:
    transport = FakeTransport()
    closes: list[tuple[int, str]] = []
    writer = SessionWriter(transport, flusher, 1 << 20, lambda: closes.append((1008, "slow")))
    session = Session(
        id=f"s{next(_ids)}",
        user=user,
        device=None,
        writer=writer,
        close=lambda code, reason: closes.append((code, reason)),
    )
    return Peer(session, transport, closes)


def msg(room: str, seq: int, sender: str = "carol") -> ChatMessage:
    return ChatMessage(room, f"0-{seq}", seq, sender, f"body {seq}", 1_764_136_800_000, f"c{seq}")


def live(hub: Hub, p: Peer, room: str, last_seq: int = -1) -> None:
    """Subscribe and finish joining at once (history up to `last_seq` was sent)."""
    hub.join(p.session, room)
    hub.finish_join(p.session, room, last_seq)


async def turn() -> None:
    await asyncio.sleep(0)  # the Flusher writes on the next loop turn


async def test_a_message_goes_only_to_its_rooms_subscribers() -> None:
    hub, flusher = Hub(), Flusher()
    a, b = peer(flusher, "alice"), peer(flusher, "bob")
    hub.add(a.session)
    hub.add(b.session)
    live(hub, a, "r")
    live(hub, b, "s")
    assert hub.deliver(msg("r", 1)) == 1
    assert hub.deliver(msg("nobody-here", 2)) == 0
    await turn()
    assert a.seqs() == [1]
    assert b.transport.writes == []
    (frame,) = a.transport.frames()
    assert frame == {
        "type": "message",
        "room": "r",
        "id": "0-1",
        "seq": 1,
        "sender": "carol",
        "body": "body 1",
        "ts": "2025-11-26T06:00:00.000Z",
        "client_id": "c1",
    }


async def test_each_message_exactly_once_per_session_by_last_seq() -> None:
    hub, flusher = Hub(), Flusher()
    a = peer(flusher, "alice")
    live(hub, a, "r")
    sent = [hub.deliver(msg("r", s)) for s in (1, 2, 2, 1, 5, 3, 5, 6)]
    assert sent == [1, 1, 0, 0, 1, 0, 0, 1]
    await turn()
    assert a.seqs() == [1, 2, 5, 6]


async def test_rooms_of_one_session_keep_their_own_seqs() -> None:
    hub, flusher = Hub(), Flusher()
    a = peer(flusher, "alice")
    live(hub, a, "r")
    live(hub, a, "s")
    for m in (msg("r", 10), msg("s", 3), msg("r", 11), msg("s", 4), msg("s", 3)):
        hub.deliver(m)
    await turn()
    assert a.seqs("r") == [10, 11]
    assert a.seqs("s") == [3, 4]


async def test_joining_buffer_is_flushed_past_the_history_without_gap_or_duplicate() -> None:
    hub, flusher = Hub(), Flusher()
    old, new = peer(flusher, "alice"), peer(flusher, "bob")
    live(hub, old, "r", last_seq=2)
    hub.join(new.session, "r")  # joining: its history (up to 4) is being read
    for s in (3, 4, 5, 5, 6):
        hub.deliver(msg("r", s))
    await turn()
    assert new.transport.writes == []  # nothing before the history reply
    assert old.seqs() == [3, 4, 5, 6]

    hub.finish_join(new.session, "r", 4)
    hub.deliver(msg("r", 6))  # a re-read
    hub.deliver(msg("r", 7))
    await turn()
    assert new.seqs() == [5, 6, 7]  # with the history's ..4: no gap, no duplicate
    assert old.seqs() == [3, 4, 5, 6, 7]


async def test_joining_buffer_flushed_whole_when_the_history_ends_before_it() -> None:
    hub, flusher = Hub(), Flusher()
    a = peer(flusher, "alice")
    hub.join(a.session, "r")
    for s in (8, 9, 12):
        hub.deliver(msg("r", s))
    hub.finish_join(a.session, "r", 5)
    await turn()
    assert a.seqs() == [8, 9, 12]


async def test_joining_buffer_covered_by_the_history_is_dropped() -> None:
    hub, flusher = Hub(), Flusher()
    a = peer(flusher, "alice")
    hub.join(a.session, "r")
    for s in (3, 4):
        hub.deliver(msg("r", s))
    hub.finish_join(a.session, "r", 10)
    hub.deliver(msg("r", 9))
    hub.deliver(msg("r", 11))
    await turn()
    assert a.seqs() == [11]


async def test_a_message_is_encoded_once_for_every_session() -> None:
    hub, flusher = Hub(), Flusher()
    peers = [peer(flusher, u) for u in ("alice", "bob", "carol")]
    for p in peers:
        live(hub, p, "r")
    assert hub.deliver(msg("r", 1)) == 3
    await turn()
    first = peers[0].transport.writes[0]
    assert all(p.transport.writes[0] is first for p in peers[1:])  # the same bytes object


async def test_a_batch_goes_out_in_one_write_per_session_the_same_bytes() -> None:
    hub, flusher = Hub(), Flusher()
    peers = [peer(flusher, u) for u in ("alice", "bob", "carol")]
    for p in peers:
        live(hub, p, "r")
    assert hub.deliver_batch("r", [msg("r", s) for s in (4, 5, 6)]) == 9
    # Written during the call: no loop turn is needed.
    first = peers[0].transport.writes
    assert len(first) == 1
    assert all(p.transport.writes == first and p.transport.writes[0] is first[0] for p in peers)
    assert peers[1].seqs() == [4, 5, 6]
    assert hub.deliver_batch("r", []) == 0
    assert hub.deliver_batch("nobody-here", [msg("nobody-here", 7)]) == 0


async def test_a_batch_gives_each_session_only_what_it_lacks() -> None:
    hub, flusher = Hub(), Flusher()
    fresh, ahead, joining = peer(flusher, "alice"), peer(flusher, "bob"), peer(flusher, "carol")
    live(hub, fresh, "r", last_seq=3)
    live(hub, ahead, "r", last_seq=5)  # a re-read: it was given up to 5
    hub.join(joining.session, "r")
    assert hub.deliver_batch("r", [msg("r", s) for s in (4, 5, 6, 7)]) == 4 + 2
    await turn()
    assert fresh.seqs() == [4, 5, 6, 7]
    assert ahead.seqs() == [6, 7]
    assert joining.transport.writes == []  # buffered until its history is out
    hub.finish_join(joining.session, "r", 5)
    await turn()
    assert joining.seqs() == [6, 7]


async def test_a_batch_goes_behind_what_the_session_has_queued() -> None:
    hub, flusher = Hub(), Flusher()
    a = peer(flusher, "alice")
    live(hub, a, "r")
    a.session.writer.send_json(b'{"type":"pong"}')  # queued earlier in the turn
    hub.deliver_batch("r", [msg("r", 1), msg("r", 2)])
    assert a.transport.writes == []  # nothing overtakes what was queued
    await turn()
    assert [f["type"] for f in a.transport.frames()] == ["pong", "message", "message"]
    assert a.seqs() == [1, 2]


async def test_add_and_remove_tell_the_users_first_and_last_session() -> None:
    hub, flusher = Hub(), Flusher()
    one, two, bob = peer(flusher, "alice"), peer(flusher, "alice"), peer(flusher, "bob")
    assert hub.add(one.session) is True
    assert hub.add(two.session) is False
    assert hub.add(bob.session) is True
    assert set(hub.sessions_of("alice")) == {one.session, two.session}
    assert sorted(hub.users()) == ["alice", "bob"]
    live(hub, one, "r")
    live(hub, one, "s")
    assert hub.room_count() == 2

    assert hub.remove(one.session) is False  # alice still has `two`
    assert hub.room_count() == 0
    assert list(hub.subscribers("r")) == []
    assert one.session.subscriptions == {}
    assert hub.remove(one.session) is False  # already gone
    assert hub.remove(two.session) is True
    assert list(hub.sessions_of("alice")) == []
    assert hub.all_sessions() == [bob.session]


async def test_leave_stops_delivery() -> None:
    hub, flusher = Hub(), Flusher()
    a, b = peer(flusher, "alice"), peer(flusher, "bob")
    live(hub, a, "r")
    live(hub, b, "r")
    hub.deliver(msg("r", 1))
    assert hub.leave(a.session, "r") is True
    assert hub.leave(a.session, "r") is False
    hub.deliver(msg("r", 2))
    await turn()
    assert a.seqs() == [1]
    assert b.seqs() == [1, 2]
    hub.finish_join(a.session, "r", 5)  # not subscribed: nothing happens
    assert "r" not in a.session.subscriptions


async def test_events_skip_their_user_and_joining_sessions() -> None:
    hub, flusher = Hub(), Flusher()
    alice, bob, carol = peer(flusher, "alice"), peer(flusher, "bob"), peer(flusher, "carol")
    live(hub, alice, "r")
    live(hub, bob, "r")
    hub.join(carol.session, "r")
    hub.broadcast_event("r", b'{"type":"typing","room":"r","user":"alice"}', "alice")
    hub.broadcast_event("empty", b"{}", None)
    await turn()
    assert alice.transport.writes == []
    assert carol.transport.writes == []
    assert bob.transport.frames() == [{"type": "typing", "room": "r", "user": "alice"}]


async def test_a_hold_buffers_until_released_then_flushes_each_once() -> None:
    hub, flusher = Hub(), Flusher()
    a, b = peer(flusher, "alice"), peer(flusher, "bob")
    live(hub, a, "r")
    live(hub, b, "r")
    hub.deliver(msg("r", 1))
    sub = hub.hold(a.session, "r")
    assert sub is not None
    assert hub.hold(a.session, "r") is None, "the first hold decides"
    for s in (2, 3, 3):
        hub.deliver(msg("r", s))
    hub.broadcast_event("r", b'{"type":"typing","room":"r","user":"bob"}', "bob")
    await turn()
    assert a.seqs() == [1], "nothing while held"
    hub.release(a.session, "r", sub)
    hub.deliver(msg("r", 4))
    await turn()
    assert a.seqs() == [1, 2, 3, 4]
    assert b.seqs() == [1, 2, 3, 4]


async def test_a_hold_on_a_joining_session_leaves_the_flush_to_the_join() -> None:
    hub, flusher = Hub(), Flusher()
    p = peer(flusher, "alice")
    hub.join(p.session, "r")  # its history (up to 2) is being read
    sub = hub.hold(p.session, "r")
    assert sub is not None
    for s in (2, 3):
        hub.deliver(msg("r", s))
    hub.release(p.session, "r", sub)
    await turn()
    assert p.seqs() == [], "the history reply goes first"
    hub.finish_join(p.session, "r", 2)
    await turn()
    assert p.seqs() == [3]


async def test_a_join_that_ends_while_held_flushes_at_the_release() -> None:
    hub, flusher = Hub(), Flusher()
    p = peer(flusher, "alice")
    hub.join(p.session, "r")
    sub = hub.hold(p.session, "r")
    assert sub is not None
    hub.deliver(msg("r", 5))
    hub.finish_join(p.session, "r", 4)
    await turn()
    assert p.seqs() == []
    hub.release(p.session, "r", sub)
    await turn()
    assert p.seqs() == [5]


async def test_a_release_after_a_new_subscribe_touches_nothing() -> None:
    hub, flusher = Hub(), Flusher()
    p = peer(flusher, "alice")
    live(hub, p, "r")
    sub = hub.hold(p.session, "r")
    assert sub is not None
    hub.leave(p.session, "r")
    hub.join(p.session, "r")  # subscribed again: a new subscription, joining
    hub.release(p.session, "r", sub)
    assert p.session.subscriptions["r"].joining
    assert not p.session.subscriptions["r"].held


class LoggedTransport(FakeTransport):
    """A transport that also notes, in a log shared by all, when it was written."""

    def __init__(self, name: int, log: list[int]) -> None:
        super().__init__()
        self.name = name
        self.log = log

    def write(self, data: bytes) -> None:
        super().write(data)
        self.log.append(self.name)


async def test_a_room_is_written_in_the_order_its_sessions_joined() -> None:
    # The fan-out's order is the join order, not a hash order: sockets are then
    # written in about the order they were accepted (bench/analysis.md).
    flusher, hub = Flusher(), Hub()
    log: list[int] = []
    sessions = []
    for i in range(200):
        writer = SessionWriter(LoggedTransport(i, log), flusher, 1 << 20, lambda: None)
        sessions.append(Session(f"o{i}", f"u{i}", None, writer, lambda code, reason: None))
    order = [*range(0, 200, 2), *range(199, 0, -2)]  # neither creation nor address order
    for i in order:
        hub.join(sessions[i], "r")
        hub.finish_join(sessions[i], "r", -1)
    hub.deliver(msg("r", 0))
    await turn()
    assert log == order
    hub.leave(sessions[order[0]], "r")
    hub.join(sessions[order[0]], "r")  # a rejoin goes to the end
    hub.finish_join(sessions[order[0]], "r", 0)
    log.clear()
    hub.deliver(msg("r", 1))
    await turn()
    assert log == [*order[1:], order[0]]
