"""WebSocket text frames, and the per-session queue written once per loop turn."""

from __future__ import annotations

import asyncio
import gc

import pytest

from parley.gateway.writer import Flusher, SessionWriter, text_frame
from tests.unit.fakes import FakeTransport, read_frames


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x81\x00"),
        (1, b"\x81\x01"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (70000, b"\x81\x7f" + (70000).to_bytes(8, "big")),
    ],
)
def test_text_frame_header(size: int, header: bytes) -> None:
    payload = bytes(i % 251 for i in range(size))
    frame = text_frame(payload)
    assert frame[: len(header)] == header
    assert frame[len(header) :] == payload
    assert read_frames(frame) == [payload]


def test_frames_read_back_in_sequence() -> None:
    payloads = [b"", b"a" * 125, b"b" * 126, b"c" * 65535, b"d" * 65536]
    assert read_frames(b"".join(text_frame(p) for p in payloads)) == payloads


class Overflows:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


async def test_frames_of_one_turn_go_out_in_one_write() -> None:
    transport = FakeTransport()
    writer = SessionWriter(transport, Flusher(), 1 << 20, Overflows())
    frames = [text_frame(b'{"n":%d}' % i) for i in range(3)]
    for f in frames:
        writer.send_frame(f)
    assert transport.writes == []  # nothing is written before the loop turns
    await asyncio.sleep(0)
    assert transport.writes == [b"".join(frames)]
    writer.send_frame(frames[0])
    await asyncio.sleep(0)
    assert transport.writes[1] is frames[0]  # a lone frame is written as it is
    writer.send_json(b'{"x":1}')
    await asyncio.sleep(0)
    assert transport.writes[2] == text_frame(b'{"x":1}')


async def test_one_flusher_serves_every_writer_of_the_turn() -> None:
    flusher = Flusher()
    transports = [FakeTransport() for _ in range(3)]
    writers = [SessionWriter(t, flusher, 1 << 20, Overflows()) for t in transports]
    for i, w in enumerate(writers):
        w.send_json(b"%d" % i)
        w.send_json(b"again")
    await asyncio.sleep(0)
    for i, t in enumerate(transports):
        assert len(t.writes) == 1
        assert read_frames(t.writes[0]) == [b"%d" % i, b"again"]


@pytest.mark.parametrize(
    ("send", "written"),
    [
        # Queued, then dropped with the queue: the client resumes with since.
        ("send_frame", []),
        # Written at once; what would pass the limit is not written.
        ("send_now", [b"x" * 100]),
    ],
)
async def test_a_reader_that_falls_behind_is_cut_off(send: str, written: list[bytes]) -> None:
    transport = FakeTransport(buffered=900)
    overflow = Overflows()
    writer = SessionWriter(transport, Flusher(), 1000, overflow)
    getattr(writer, send)(b"x" * 100)  # 1000 with what the transport holds: fine
    assert (overflow.count, writer.closed) == (0, False)
    getattr(writer, send)(b"y" * 101)  # past 1000: over
    assert (overflow.count, writer.closed) == (1, True)
    getattr(writer, send)(b"z")
    await asyncio.sleep(0)
    assert overflow.count == 1
    assert transport.writes == written


async def test_nothing_is_written_to_a_closing_transport() -> None:
    transport = FakeTransport()
    writer = SessionWriter(transport, Flusher(), 1 << 20, Overflows())
    writer.send_json(b"{}")
    transport.closing = True
    await asyncio.sleep(0)
    assert transport.writes == []


async def test_close_flushes_what_is_queued_then_stops() -> None:
    transport = FakeTransport()
    writer = SessionWriter(transport, Flusher(), 1 << 20, Overflows())
    writer.send_json(b'"last"')
    writer.close()
    assert read_frames(b"".join(transport.writes)) == [b'"last"']
    assert writer.closed
    writer.send_json(b'"after"')
    await asyncio.sleep(0)
    assert read_frames(b"".join(transport.writes)) == [b'"last"']


async def test_send_now_writes_at_once_when_nothing_is_queued() -> None:
    transport = FakeTransport()
    writer = SessionWriter(transport, Flusher(), 1 << 20, Overflows())
    frame = text_frame(b'"now"')
    writer.send_now(frame)
    assert transport.writes == [frame]  # no loop turn needed
    writer.send_json(b'"queued"')
    writer.send_now(text_frame(b'"behind"'))
    assert transport.writes == [frame]  # it waits behind what is queued
    await asyncio.sleep(0)
    assert read_frames(b"".join(transport.writes)) == [b'"now"', b'"queued"', b'"behind"']


class Broken(FakeTransport):
    def write(self, data: bytes) -> None:
        raise OSError("gone")


async def test_send_now_to_a_lost_socket_loses_that_session_only() -> None:
    flusher = Flusher()
    broken, fine = Broken(), FakeTransport()
    lost = SessionWriter(broken, flusher, 1 << 20, Overflows())
    kept = SessionWriter(fine, flusher, 1 << 20, Overflows())
    lost.send_now(b"a")  # logged, not raised
    kept.send_now(b"a")
    assert lost.closed and not kept.closed
    assert fine.writes == [b"a"]
    transport = FakeTransport()
    closing = SessionWriter(transport, flusher, 1 << 20, Overflows())
    transport.closing = True
    closing.send_now(b"a")
    assert transport.writes == []


class CollectorSeen(FakeTransport):
    """Notes whether the collector was on at each write."""

    def __init__(self) -> None:
        super().__init__()
        self.collector_on: list[bool] = []

    def write(self, data: bytes) -> None:
        self.collector_on.append(gc.isenabled())
        super().write(data)


async def test_the_collector_waits_until_the_turns_frames_are_written() -> None:
    flusher = Flusher()
    transports = [CollectorSeen() for _ in range(3)]
    writers = [SessionWriter(t, flusher, 1 << 20, Overflows()) for t in transports]
    try:
        assert gc.isenabled()
        flusher.hold_collector()
        for w in writers:
            w.send_json(b"{}")
        assert not gc.isenabled()  # a collection now would fall mid-fan-out
        await asyncio.sleep(0)
        assert [t.collector_on for t in transports] == [[False]] * 3  # off for every write
        assert gc.isenabled()  # and on again once they are written
        flusher.hold_collector()  # nothing is queued this time: the hold still ends
        assert not gc.isenabled()
        await asyncio.sleep(0)
        assert gc.isenabled()
    finally:
        gc.enable()


async def test_the_collector_comes_back_when_the_last_hold_ends() -> None:
    first, second = Flusher(), Flusher()  # two nodes in one process
    seen: list[bool] = []
    try:
        first.hold_collector()
        asyncio.get_running_loop().call_soon(lambda: seen.append(gc.isenabled()))
        second.hold_collector()
        await asyncio.sleep(0)  # first's flush, the check, then second's flush
        assert seen == [False]  # the second still held it after the first's flush
        assert gc.isenabled()
    finally:
        gc.enable()


async def test_a_collector_turned_off_elsewhere_stays_off() -> None:
    flusher = Flusher()
    gc.disable()
    try:
        flusher.hold_collector()
        await asyncio.sleep(0)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_without_a_running_loop_the_collector_is_left_alone() -> None:
    flusher = Flusher()
    with pytest.raises(RuntimeError):
        flusher.hold_collector()
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        flusher.hold_collector()  # not stuck as "held" or "scheduled" either
    assert gc.isenabled()
