"""The load generator's C receive path (bench/fastread.c) reads what uvloop read.

The benchmark's latencies are the C thread's stamps and its exactly-once counts
are the frames it keeps, so the instrument itself is tested: frames cut at
any byte, several in one read, long ones, fragments, the bytes Python had
already read when it handed the socket over, pings answered at once, a close
frame and the end of the stream handed back to Python, and nothing read once
a connection is forgotten.
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from bench.driver import build_fastread
from bench.loadgen import FastReader, _epoll_holding


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A server's frame: unmasked."""
    n = len(payload)
    head = bytes(((0x80 if fin else 0) | opcode,))
    if n < 126:
        head += bytes((n,))
    elif n < 65536:
        head += bytes((126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((127,)) + n.to_bytes(8, "big")
    return head + payload


class Conn:
    """What FastReader needs of bench.loadgen.Conn."""

    def __init__(self, idx: int, transport: asyncio.Transport) -> None:
        self.idx = idx
        self.transport = transport
        self.buf = b""
        self.frag = b""
        self.handed = False
        self.controls: list[tuple[int, bytes]] = []

    def control(self, op: int, payload: bytes) -> None:
        self.controls.append((op, payload))
        if op == 8:
            self.transport.close()


class Worker:
    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes, int]] = []
        self.errors: list[str] = []

    def on_frame(self, conn: Conn, payload: bytes, now: int) -> None:
        self.frames.append((conn.idx, payload, now))

    def note_error(self, what: str) -> None:
        self.errors.append(what)


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = build_fastread(tmp_path_factory.mktemp("fastread"))
    assert built is not None, "bench/fastread.c did not build (no C compiler?)"
    return built


@pytest.fixture
async def fast(lib: Path) -> AsyncIterator[tuple[Worker, FastReader]]:
    """A worker's stand-in and its reader thread, stopped after the test."""
    w = Worker()
    reader = FastReader(w, str(lib))  # type: ignore[arg-type]
    yield w, reader
    reader.stop()


async def pair(idx: int) -> tuple[Conn, socket.socket]:
    """A connection read by uvloop's stand-in (asyncio) and the server's end of it."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(True)
    holder: dict[str, Any] = {}

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            holder["t"] = transport

        def data_received(self, data: bytes) -> None:
            raise AssertionError("read by the event loop after the handover")

    await asyncio.get_running_loop().create_connection(Proto, sock=ours)
    await asyncio.sleep(0)  # the transport starts reading, as the worker's had
    return Conn(idx, holder["t"]), theirs


async def handed(reader: FastReader, idx: int) -> tuple[Conn, socket.socket]:
    """A connection read by the C thread from the start, and the server's end."""
    conn, server = await pair(idx)
    reader.take(conn)  # type: ignore[arg-type]
    return conn, server


def hang_up(reader: FastReader, conn: Conn, server: socket.socket) -> None:
    reader.forget(conn)  # type: ignore[arg-type]
    conn.transport.close()
    server.close()


async def until(cond: Any, reader: FastReader | None = None, wait_s: float = 5.0) -> None:
    """Wait for cond; with a reader, parse what it read on each turn (else its timer does)."""
    deadline = time.monotonic() + wait_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
        if reader is not None:
            reader.drain()


async def test_frames_cut_anywhere_arrive_whole_in_order(fast: tuple[Worker, FastReader]) -> None:
    w, reader = fast
    conn, server = await pair(7)
    texts = [b"a", b"x" * 125, b"y" * 126, b"z" * 70_000, b'{"room":"r","seq":1}']
    stream = b"".join(frame(1, t) for t in texts)
    # Python had read the first frame and 3 bytes of the second when it handed over.
    read_before = len(frame(1, texts[0])) + 3
    conn.buf = stream[:read_before]
    reader.take(conn)  # type: ignore[arg-type]
    assert conn.handed and conn.buf == b""
    t0 = time.monotonic_ns()
    rest = stream[read_before:]
    for cut in (1, 2, 5, 200, 1000, 40_000):  # a header cut, a payload cut, several
        server.sendall(rest[:cut])
        rest = rest[cut:]
        await asyncio.sleep(0.002)
    server.sendall(rest)
    await until(lambda: len(w.frames) == len(texts), reader)
    assert [p for _, p, _ in w.frames] == texts
    assert all(i == 7 for i, _, _ in w.frames)
    stamps = [t for _, _, t in w.frames]
    assert stamps == sorted(stamps)
    assert stamps[-1] >= t0  # the read's stamp, on time.monotonic_ns()'s clock
    hang_up(reader, conn, server)


async def test_fragments_are_joined_and_pings_answered_through_python(
    fast: tuple[Worker, FastReader],
) -> None:
    w, reader = fast
    conn, server = await handed(reader, 1)
    server.sendall(frame(1, b"hel", fin=False) + frame(9, b"are you there") + frame(0, b"lo"))
    await until(lambda: len(w.frames) == 1, reader)
    assert w.frames[0][1] == b"hello"
    # The ping went back to Python, which owns the writes: its control() answers it.
    assert conn.controls == [(9, b"are you there")]
    hang_up(reader, conn, server)


async def test_close_frame_and_end_of_stream_go_back_to_python(
    fast: tuple[Worker, FastReader],
) -> None:
    w, reader = fast
    closing, s1 = await pair(1)
    ending, s2 = await pair(2)
    reader.take(closing)  # type: ignore[arg-type]
    reader.take(ending)  # type: ignore[arg-type]
    s1.sendall(frame(1, b"last") + frame(8, (1001).to_bytes(2, "big")) + frame(1, b"after"))
    s2.sendall(frame(1, b"bye"))
    s2.close()
    await until(lambda: closing.controls and ending.transport.is_closing(), reader)
    assert closing.controls == [(8, (1001).to_bytes(2, "big"))]
    assert not closing.handed and not ending.handed
    assert reader.conns == {}
    assert sorted(p for _, p, _ in w.frames) == [b"bye", b"last"]  # nothing after a close
    s1.close()
    await asyncio.sleep(0)  # the transports' closing callbacks


async def test_a_forgotten_connection_is_not_read(fast: tuple[Worker, FastReader]) -> None:
    w, reader = fast
    conn, server = await handed(reader, 3)
    server.sendall(frame(1, b"one"))
    await until(lambda: len(w.frames) == 1, reader)
    reader.forget(conn)  # type: ignore[arg-type]
    server.sendall(frame(1, b"two"))
    await asyncio.sleep(0.1)
    reader.drain()
    assert [p for _, p, _ in w.frames] == [b"one"]
    conn.transport.close()
    server.close()


async def test_a_length_no_frame_has_ends_the_stream(fast: tuple[Worker, FastReader]) -> None:
    w, reader = fast
    conn, server = await handed(reader, 4)
    server.sendall(frame(1, b"ok") + bytes((0x81, 127)) + b"\xff" * 8 + b"junk")
    await until(lambda: conn.transport.is_closing(), reader)
    assert [p for _, p, _ in w.frames] == [b"ok"]
    assert not conn.handed
    server.close()


async def test_frames_read_before_a_connection_is_lost_still_count(
    fast: tuple[Worker, FastReader],
) -> None:
    w, reader = fast
    conn, server = await handed(reader, 5)
    reader._timer.cancel()  # nothing parses them but what forget() does
    server.sendall(frame(1, b"read") + frame(1, b"too"))
    await until(lambda: _pending(reader) >= 2)
    reader.forget(conn)  # type: ignore[arg-type]  # as Conn.connection_lost does
    assert [p for _, p, _ in w.frames] == [b"read", b"too"]
    conn.transport.close()
    server.close()


async def test_a_frame_that_raises_is_neither_counted_twice_nor_the_end(
    fast: tuple[Worker, FastReader],
) -> None:
    w, reader = fast
    conn, server = await handed(reader, 6)
    seen: list[bytes] = []

    def on_frame(c: Conn, payload: bytes, now: int) -> None:
        seen.append(payload)
        if payload == b"bad":
            raise ValueError("a frame the worker cannot handle")

    w.on_frame = on_frame  # type: ignore[method-assign,assignment]
    server.sendall(frame(1, b"one") + frame(1, b"bad") + frame(1, b"two"))
    await until(lambda: seen == [b"one", b"bad", b"two"])  # parsed by the reader's own timer
    hang_up(reader, conn, server)


def _pending(reader: FastReader) -> int:
    status = (ctypes.c_uint64 * 5)()
    reader.lib.fr_status(status)
    return int(status[0])


def _epoll_set(epfd: int) -> set[int]:
    with open(f"/proc/self/fdinfo/{epfd}") as info:
        return {int(line.split()[1]) for line in info if line.startswith("tfd:")}


def test_a_handed_socket_leaves_uvloops_epoll_set_at_once(lib: Path) -> None:
    """uvloop (libuv) stops reading lazily, leaving the socket in its epoll set
    until data comes; then every socket of a burst would wake the worker's loop
    too. The hand-over takes it out at once."""

    async def main() -> None:
        w = Worker()
        reader = FastReader(w, str(lib))  # type: ignore[arg-type]
        try:
            conn, server = await pair(3)
            fd = conn.transport.get_extra_info("socket").fileno()
            loop_epoll = _epoll_holding(fd)
            assert loop_epoll >= 0, "uvloop reads the socket before the hand-over"
            reader.take(conn)  # type: ignore[arg-type]
            assert fd not in _epoll_set(loop_epoll)
            server.sendall(frame(1, b"hello"))
            await until(lambda: len(w.frames) == 1, reader)
            assert fd not in _epoll_set(loop_epoll)
            hang_up(reader, conn, server)
        finally:
            reader.stop()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
