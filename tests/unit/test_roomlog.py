"""What a node has read of each room: the window, its coverage, the first of each send."""

from __future__ import annotations

from parley.gateway.roomlog import RoomLogs
from parley.protocol.messages import ChatMessage


def msg(
    seq: int, client_id: str | None = None, sender: str = "alice", room: str = "r"
) -> ChatMessage:
    return ChatMessage(
        room, f"0-{seq}", seq, sender, f"b{seq}", 1_000_000 + seq, client_id or f"c{seq}"
    )


def window(logs: RoomLogs, room: str = "r") -> list[int]:
    state = logs.get(room)
    assert state is not None
    return [m.seq for m in state.window]


def test_the_first_record_of_a_send_wins() -> None:
    logs = RoomLogs(window_size=100)
    first = msg(5, "same")
    assert logs.add(first, 0) == (first.ack(), True)
    # The retry is answered with the first record's id and seq.
    assert logs.add(msg(8, "same"), 0) == (first.ack(), False)
    assert logs.add(msg(9, "same", sender="bob"), 0)[1] is True  # another sender's id
    assert logs.add(msg(10, "same", room="s"), 0)[1] is True  # another room
    assert window(logs) == [5, 9]
    state = logs.get("r")
    assert state is not None and state.head == 9
    assert logs.pairs == 3


def test_a_re_read_record_is_never_new() -> None:
    logs = RoomLogs(window_size=100)
    for s in (1, 2, 3):
        assert logs.add(msg(s), 0)[1] is True
    assert logs.add(msg(2), 0) == (msg(2).ack(), False)
    # A re-read of an earlier send's retry still stands for that send.
    assert logs.add(msg(1, "c3"), 0) == (msg(3).ack(), False)
    # Not above the head and never seen (read before this node started): not new either.
    stranger = msg(0, "unknown")
    assert logs.add(stranger, 0) == (stranger.ack(), False)
    assert window(logs) == [1, 2, 3]
    assert logs.pairs == 3


def test_coverage_starts_at_the_partitions_start_offset() -> None:
    logs = RoomLogs(window_size=10)
    logs.set_partition_start(0, 40)
    assert logs.room("r", 0).coverage == 40
    assert logs.room("other", 1).coverage == 0  # partition without a known start
    assert logs.get("never") is None


def test_window_eviction_moves_coverage() -> None:
    logs = RoomLogs(window_size=3)
    logs.set_partition_start(0, 10)
    logs.set_persisted({0: 1000})  # the store holds everything: trim freely
    for s in (11, 13, 14):
        logs.add(msg(s), 0)
    state = logs.get("r")
    assert state is not None
    assert (state.coverage, window(logs)) == (10, [11, 13, 14])
    logs.add(msg(17), 0)
    assert (state.coverage, window(logs)) == (12, [13, 14, 17])
    logs.add(msg(18, "c13"), 0)  # a retry: not in the window, evicts nothing
    assert (state.coverage, window(logs)) == (12, [13, 14, 17])
    logs.add(msg(20), 0)
    assert (state.coverage, window(logs)) == (14, [14, 17, 20])
    # Everything at or above coverage is in the window.
    assert all(m.seq >= state.coverage for m in state.window)


def test_the_window_keeps_what_the_store_does_not_have_yet() -> None:
    logs = RoomLogs(window_size=2)
    logs.set_partition_start(0, 0)
    for s in range(6):
        logs.add(msg(s), 0)
    state = logs.get("r")
    assert state is not None
    assert (state.coverage, window(logs)) == (0, [0, 1, 2, 3, 4, 5]), "nothing persisted yet"
    logs.set_persisted({0: 3})
    logs.add(msg(6), 0)
    assert (state.coverage, window(logs)) == (3, [3, 4, 5, 6]), "trimmed only below the store"
    logs.set_persisted({0: 7})
    logs.add(msg(7), 0)
    assert (state.coverage, window(logs)) == (6, [6, 7])


def test_after_and_before_read_the_window() -> None:
    logs = RoomLogs(window_size=10)
    for s in (2, 4, 6, 8):
        logs.add(msg(s), 0)
    state = logs.get("r")
    assert state is not None
    assert [m.seq for m in state.after(4)] == [6, 8]
    assert [m.seq for m in state.after(-1)] == [2, 4, 6, 8]
    assert state.after(8) == []
    assert state.after(100) == []
    assert [m.seq for m in state.before(6)] == [2, 4]
    assert [m.seq for m in state.before(None)] == [2, 4, 6, 8]
    assert state.before(2) == []


def test_expire_forgets_old_pairs_only() -> None:
    logs = RoomLogs(window_size=10)
    for s in (1, 2, 3):
        logs.add(msg(s), 0)
    assert logs.expire(older_than_ms=1_000_000 + 3) == 2  # ts of seqs 1 and 2
    assert logs.pairs == 1
    assert logs.add(msg(9, "c3"), 0)[1] is False  # still known
    assert logs.add(msg(10, "c1"), 0)[1] is True  # forgotten: a send of its own now
    assert dict(logs).keys() == {"r"}


def test_a_window_held_while_the_store_lagged_shrinks_when_it_catches_up() -> None:
    """A quiet room must not keep a long window (and slow pages) until its next message."""
    logs = RoomLogs(window_size=3)
    for s in range(10):
        logs.add(msg(s), 0)
    assert window(logs) == list(range(10))  # nothing stored yet: all kept
    logs.set_persisted({0: 4})
    assert window(logs) == [4, 5, 6, 7, 8, 9]  # only what the store has may go
    logs.set_persisted({0: 10})
    assert window(logs) == [7, 8, 9]
    state = logs.get("r")
    assert state is not None and state.coverage == 7


def test_the_idempotency_map_holds_nothing_the_garbage_collector_tracks() -> None:
    """A node keeps one pair per message of the window (over a million in the soak);
    as objects they made each full collection stop the loop for about a second."""
    import gc

    logs = RoomLogs(window_size=10)
    for s in range(1000):
        logs.add(msg(s, sender=f"u{s % 7}"), 0)
    gc.collect()
    state = logs.get("r")
    assert state is not None and len(state.seen) == 1000
    assert not any(gc.is_tracked(k) or gc.is_tracked(v) for k, v in state.seen.items())
    assert state.first("u3", "c3") == msg(3, sender="u3").ack()


def test_a_pair_costs_about_200_bytes() -> None:
    """The map's size is what the soak's memory is made of: a tuple key and an
    (id, seq, ts) tuple held about 400 bytes a pair with the strings each record
    decodes to, and a 24-hour window of them was gigabytes."""
    import tracemalloc

    logs = RoomLogs(window_size=10)
    logs.set_persisted({3: 10**9})  # the window stays at 10 messages
    n_pairs = 50_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(n_pairs):  # fresh strings per record, as decoding makes them
            sender, client_id = f"user.{n % 50}", f"{n:08x}-0000-4000-8000-{n:012x}"
            logs.add(ChatMessage("r", f"3-{n}", n, sender, "", 1_790_000_000_000, client_id), 3)
        per_pair = (tracemalloc.get_traced_memory()[0] - before) / n_pairs
    finally:
        tracemalloc.stop()
    assert per_pair < 260, per_pair


def test_the_first_send_comes_back_exactly_from_its_packed_form() -> None:
    logs = RoomLogs(window_size=10)
    far = ChatMessage("r", "70000-123456789012", 123456789012, "bob", "", (1 << 44) - 1, "x\0y")
    assert logs.add(far, 70000) == (far.ack(), True)
    state = logs.get("r")
    assert state is not None
    assert state.first("bob", "x\0y") == far.ack()
    assert state.first("bob\0x", "y") is None  # any sender, whatever it holds
    assert state.first("bo", "b\0x\0y") is None
    assert state.first("bob", "x") is None
