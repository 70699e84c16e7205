"""Load-generator worker: thousands of chat clients in one process, in callbacks.

One process of the load generator. The runner (bench/run.py) starts several
and drives each through JSON lines on stdin; the worker answers with JSON
lines on stdout. Standard library plus uvloop and PyJWT only: it runs in the
benchmark's own venv and never imports Parley.

Every connection is an `asyncio.Protocol` with its own sans-I/O WebSocket
client: it writes the opening handshake, parses frames as bytes arrive and
handles each in the `data_received` callback (no coroutine per frame; a
coroutine-based client cost about twice the CPU per frame and became the
bottleneck before python-socketio did). One connection speaks one of three
dialects on top of the WebSocket:

- `parley`: PROTOCOL.md frames (`/ws?token=…&room=…`);
- `socketio`: the tiny subset of Engine.IO 4 / Socket.IO 5 over the
  WebSocket transport that a chat needs: `0` open, `2`/`3` ping/pong,
  `40{auth}` connect, `42[event, data]` events, `44` connect error;
- `channels`: the JSON frames of bench/peers/channels_chat.

Every chat message body carries `~B~<sender>:<seq>:<step>:<t_ns>~` where
`t_ns` is CLOCK_MONOTONIC when the sender wrote the frame, so a receiver
measures send → read latency with the clock every process of the machine
shares, and can tell a lost, duplicated or foreign message apart without
parsing JSON: the marker is found with `bytes.find` in the frame.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import gc
import hashlib
import json
import math
import os
import re
import resource
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import jwt

# Linux's IP_BIND_ADDRESS_NO_PORT (4.2+), which the socket module does not name.
IP_BIND_ADDRESS_NO_PORT = 24

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = base64.b64encode(b"parley-bench-key")
ACCEPT = base64.b64encode(hashlib.sha1(KEY + GUID).digest())
MARK = b"~B~"
# Latency histogram: bucket = int(ln(µs + 1) * SCALE): 2 % resolution, 10 µs to hours.
SCALE = 50.0
NBUCKETS = int(math.log(3_600_000_000) * SCALE) + 2
PAD = "x" * 60  # the rest of a ~100-character chat message


def settle_heap() -> None:
    """Keep what the worker holds from now on out of the collector's reach.

    A worker holds its connections and, per receiver, a Track per sender:
    tens of thousands of objects that live as long as it does. CPython's full
    collection walks them all while the worker reads nothing, and the frames
    that wait meanwhile are recorded late: the instrument's pause counted as
    the system's latency (the soak's generator showed 400 ms to 1 s of it).
    Collected young and frozen (bench/soak.py does the same), they are never
    walked again; called when connections open and when a step begins.
    """
    gc.collect(1)
    gc.freeze()


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"ev": event, **fields}) + "\n")
    sys.stdout.flush()


def cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def masked(opcode: int, payload: bytes) -> bytes:
    """A client frame. The mask key is zero, which RFC 6455 allows: XOR is a no-op."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + payload


class Track:
    """What one receiver got from one sender: exactly-once bookkeeping without a set per message."""

    __slots__ = ("count", "dups", "max_seq", "missing", "reordered")

    def __init__(self) -> None:
        self.count = 0  # distinct messages received
        self.max_seq = -1
        self.missing: set[int] | None = None  # seqs skipped so far (lost or late)
        self.dups = 0
        self.reordered = 0

    def add(self, seq: int) -> bool:
        """Record one reception; False for a duplicate."""
        top = self.max_seq
        if seq == top + 1:
            self.max_seq = seq
        elif seq > top:
            if self.missing is None:
                self.missing = set()
            self.missing.update(range(top + 1, seq))
            self.max_seq = seq
        elif self.missing is not None and seq in self.missing:
            self.missing.discard(seq)
            self.reordered += 1
        else:
            self.dups += 1
            return False
        self.count += 1
        return True


class Conn(asyncio.Protocol):
    """One chat client: WebSocket framing, the dialect, and its receive bookkeeping."""

    def __init__(self, worker: Worker, idx: int, user: str, room: str, port: int) -> None:
        self.w = worker
        self.idx = idx
        self.user = user
        self.room = room
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.frag = b""
        self.open = False  # WebSocket open
        self.ready = False  # authenticated and joined
        self.closed = True
        self.close_code: int | None = None
        self.ready_fut: asyncio.Future[None] | None = None
        self.since: int | None = None
        self.last_seq = -1  # Parley: highest seq seen in the room (for `since`)
        self.resumed = False
        self.sent = 0
        self.send_prefix = b""
        self.send_suffix = b""
        self.tracks: dict[int, Track] = {}
        self.acks = 0
        self.handed = False  # read by the worker's FastReader since it was ready

    # Connection --------------------------------------------------------------

    def request(self) -> bytes:
        w = self.w
        host = f"127.0.0.1:{self.port}"
        if w.system == "parley":
            path = f"/ws?token={w.token(self.user)}&room={self.room}"
            if self.since is not None:
                path += f"&since={self.since}"
        elif w.system == "socketio":
            path = "/socket.io/?EIO=4&transport=websocket"
        else:
            path = f"/ws/chat/?token={w.token(self.user)}"
        return (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.closed = False
        self.open = False
        self.ready = False
        self.buf = b""
        self.frag = b""
        transport.write(self.request())  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handed and self.w.fast is not None:
            self.w.fast.forget(self)
        self.closed = True
        self.open = False
        was_ready = self.ready
        self.ready = False
        if self.ready_fut is not None and not self.ready_fut.done():
            self.ready_fut.set_exception(
                ConnectionError(f"closed before ready (code {self.close_code}, {exc!r})")
            )
        if was_ready:
            self.w.lost += 1

    def write(self, payload: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(masked(0x1, payload))

    def set_ready(self) -> None:
        self.ready = True
        if self.ready_fut is not None and not self.ready_fut.done():
            self.ready_fut.set_result(None)

    # Bytes in ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self.open:
            data = self.buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            head = data[:end]
            self.buf = b""
            if not head.startswith(b"HTTP/1.1 101") or ACCEPT not in head:
                self.w.note_error("handshake " + head[:60].decode("latin-1").split("\r\n")[0])
                if self.ready_fut is not None and not self.ready_fut.done():
                    self.ready_fut.set_exception(ConnectionError(head[:80].decode("latin-1")))
                assert self.transport is not None
                self.transport.close()
                return
            self.open = True
            self.on_open()
            data = data[end + 4 :]
            if not data:
                return
        if self.buf:
            data = self.buf + data
            self.buf = b""
        pos = 0
        n = len(data)
        while pos + 2 <= n:
            b0 = data[pos]
            ln = data[pos + 1]
            if ln < 126:
                hl = 2
            elif ln == 126:
                if pos + 4 > n:
                    break
                ln = (data[pos + 2] << 8) | data[pos + 3]
                hl = 4
            else:
                if pos + 10 > n:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hl = 10
            end = pos + hl + ln
            if end > n:
                break
            payload = data[pos + hl : end]
            pos = end
            op = b0 & 0x0F
            if op >= 8:
                self.control(op, payload)
                continue
            if not b0 & 0x80:  # a fragment: keep it until the final one
                self.frag += payload
                continue
            if self.frag:
                payload = self.frag + payload
                self.frag = b""
            self.w.on_frame(self, payload, now)
        if pos < n:
            self.buf = data[pos:]
        if self.ready and not self.handed and self.w.fast_read:
            assert self.w.fast is not None
            self.w.fast.take(self)

    def control(self, op: int, payload: bytes) -> None:
        assert self.transport is not None
        if op == 9:
            self.transport.write(masked(0xA, payload))
        elif op == 8:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self.transport.is_closing():
                self.transport.write(masked(0x8, payload[:2]))
                self.transport.close()

    # Dialects ------------------------------------------------------------------

    def on_open(self) -> None:
        system = self.w.system
        room = self.room
        if system == "parley":
            self.send_prefix = b'{"type":"send","room":"' + room.encode() + b'","client_id":"'
        elif system == "socketio":
            self.send_prefix = b'42["send",{"room":"' + room.encode() + b'","body":"'
            self.send_suffix = b'"}]'
        else:
            self.write(json.dumps({"type": "join", "room": room}).encode())
            self.send_prefix = b'{"type":"send","room":"' + room.encode() + b'","body":"'
            self.send_suffix = b'"}'

    def send_chat(self, step: int) -> None:
        seq = self.sent
        self.sent = seq + 1
        body = f"~B~{self.idx}:{seq}:{step}:{time.monotonic_ns()}~{PAD}".encode()
        if self.w.system == "parley":
            payload = self.send_prefix + f"{self.idx}-{seq}".encode() + b'","body":"' + body + b'"}'
        else:
            payload = self.send_prefix + body + self.send_suffix
        self.write(payload)


RECORD = struct.Struct("<IB3xIQ")  # bench/fastread.c: id, kind, length, t_ns


_EPOLL_CTL_DEL = 2


def _epoll_holding(fd: int) -> int:
    """The epoll descriptor of this process whose set holds `fd` (-1: none)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/self/fdinfo/{name}") as info:
                if re.search(rf"^tfd:\s+{fd}\s", info.read(), re.M):
                    return int(name)
        except OSError:
            continue
    return -1


class FastReader:
    """The worker's receive path once a connection is ready: bench/fastread.c in a thread.

    The handshake, the join and every write stay with uvloop and `Conn`; from
    the frame that makes a connection ready on, its transport stops reading
    and the C thread reads the socket, stamps each read and keeps the frames.
    Reading through uvloop and a Python protocol cost about 7 us of CPU a
    frame, on the cores the servers need in the big room's bursts.

    The kept frames are parsed here by the same `Worker.on_frame`, with the C
    stamp: when the worker has read nothing for a while (after a big room's
    burst: parsing during it would take a core from the servers), when many
    wait or the oldest has waited long (steady fan-out), and at once when a
    connection closed. Parsing goes in slices, with the event loop's other
    callbacks between them, so the senders' timer keeps its schedule: one
    long parse would hold the sends back and release them in a burst.
    """

    QUIET_NS = 25_000_000  # parse once nothing was read for this long,
    OLDEST_NS = 50_000_000  # or the oldest frame waited this long,
    MAX_PENDING = 4096  # or this many wait (more than a big room's burst per worker)
    SLICE = 256  # records parsed per loop callback
    POLL_S = 0.01

    def __init__(self, worker: Worker, lib_path: str) -> None:
        lib = ctypes.CDLL(lib_path)
        lib.fr_start.argtypes = [ctypes.c_uint64]
        lib.fr_start.restype = ctypes.c_int
        lib.fr_add.argtypes = [ctypes.c_uint32, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
        lib.fr_add.restype = ctypes.c_int
        lib.fr_remove.argtypes = [ctypes.c_uint32]
        lib.fr_remove.restype = None
        lib.fr_status.argtypes = [ctypes.POINTER(ctypes.c_uint64)]
        lib.fr_status.restype = None
        lib.fr_drain.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.fr_drain.restype = ctypes.c_size_t
        lib.fr_stop.restype = None
        nap_us = int(os.environ.get("BENCH_FASTREAD_NAP_US", "500"))
        if lib.fr_start(nap_us * 1000) != 0:
            raise OSError("fastread: no epoll thread")
        self.lib = lib
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._loop_epoll: int | None = None  # found at the first hand-over
        self.w = worker
        self.conns: dict[int, Conn] = {}
        self._status = (ctypes.c_uint64 * 5)()
        self._ptr = ctypes.c_void_p()
        self._data = b""  # records taken from the thread, parsed up to _pos
        self._pos = 0
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | asyncio.Handle = self._loop.call_later(
            self.POLL_S, self.poll
        )

    def take(self, conn: Conn) -> None:
        assert conn.transport is not None
        fd = conn.transport.get_extra_info("socket").fileno()
        conn.transport.pause_reading()
        self._leave_loop_epoll(conn, fd)
        if self.lib.fr_add(conn.idx, fd, conn.buf, len(conn.buf)) != 0:
            conn.transport.resume_reading()
            self.w.note_error("fastread: epoll_ctl failed, read by uvloop")
            return
        conn.buf = b""
        conn.handed = True
        self.conns[conn.idx] = conn

    def _leave_loop_epoll(self, conn: Conn, fd: int) -> None:
        """Take the socket out of the event loop's epoll set now.

        libuv stops reading lazily: the socket stays in its epoll set until
        data arrives, and only then is it removed (epoll_ctl DEL). So the first
        message after the members were handed over woke the worker's loop
        once per socket, and each wake-up and removal ran on the cores the
        servers were writing with: the first big-room message of every run
        reached its last member 10-20 ms later than the others (perf, in
        bench/analysis.md). libuv marks the socket as not registered when it
        stops reading, so a later resume adds it again.
        """
        assert conn.transport is not None
        if conn.transport.get_write_buffer_size() > 0:
            return  # libuv still watches it for writing: its own removal must stand
        if self._loop_epoll is None:
            found = _epoll_holding(fd)
            self._loop_epoll = found if found >= 0 else None
        if self._loop_epoll is not None:
            self._libc.epoll_ctl(self._loop_epoll, _EPOLL_CTL_DEL, fd, None)

    def forget(self, conn: Conn) -> None:
        """Stop reading conn's socket (before its transport closes it), keeping what was read."""
        self.lib.fr_remove(conn.idx)
        self.drain()  # its frames read so far count, as uvloop's would have
        conn.handed = False
        self.conns.pop(conn.idx, None)

    def poll(self) -> None:
        try:
            self._poll()
        finally:  # a frame that raised must not stop the parsing of the others
            if self._pos < len(self._data):
                self._timer = self._loop.call_soon(self.poll)  # the rest after what else is due
            else:
                self._timer = self._loop.call_later(self.POLL_S, self.poll)

    def _poll(self) -> None:
        if self._pos >= len(self._data):
            st = self._status
            self.lib.fr_status(st)
            if st[4]:
                self.w.note_error(f"fastread: the reader thread stopped (errno {st[4]})")
            now = time.monotonic_ns()
            if st[0] and (
                st[3]
                or st[0] >= self.MAX_PENDING
                or now - st[1] >= self.QUIET_NS
                or now - st[2] >= self.OLDEST_NS
            ):
                self._take()
        if self._pos < len(self._data):
            self._parse(self.SLICE)

    def drain(self) -> None:
        """Parse every frame read so far, now (before counts are reported)."""
        self._take()
        self._parse(None)

    def _take(self) -> None:
        n = self.lib.fr_drain(ctypes.byref(self._ptr))
        if not n:
            return
        assert self._ptr.value is not None
        new = ctypes.string_at(self._ptr.value, n)
        self._data = self._data[self._pos :] + new if self._pos < len(self._data) else new
        self._pos = 0

    def _parse(self, budget: int | None) -> None:
        """Up to `budget` records (all if None), in the order the thread read them.

        The position moves past each record before it is handled, so that one
        that raises is not handled again (its frames counted twice).
        """
        data = self._data
        n = len(data)
        unpack = RECORD.unpack_from
        head = RECORD.size
        conns = self.conns
        on_frame = self.w.on_frame
        left = -1 if budget is None else budget
        while self._pos < n and left != 0:
            left -= 1
            pos = self._pos
            cid, kind, ln, t = unpack(data, pos)
            payload = data[pos + head : pos + head + ln]
            self._pos = pos + head + ln
            conn = conns.get(cid)
            if conn is None:
                continue
            if kind == 0:
                if conn.frag:
                    payload = conn.frag + payload
                    conn.frag = b""
                on_frame(conn, payload, t)
            elif kind == 3:
                conn.frag += payload
            elif kind == 4:
                conn.control(9, payload)  # the pong goes through the transport's writes
            else:  # the thread no longer reads it: a close frame (1) or the end (2)
                conn.handed = False
                del conns[cid]
                if kind == 1:
                    conn.control(8, payload)
                elif conn.transport is not None:
                    conn.transport.close()
        if self._pos >= n:
            self._data = b""
            self._pos = 0

    def release_all(self) -> None:
        """Read nothing more, then parse what was read: the connections are closing."""
        for idx in self.conns:
            self.lib.fr_remove(idx)
        self.drain()
        for conn in self.conns.values():
            conn.handed = False
        self.conns.clear()

    def stop(self) -> None:
        self._timer.cancel()
        self.release_all()
        self.lib.fr_stop()


class Worker:
    def __init__(self, system: str, secret: str, bind: str, wid: int) -> None:
        self.system = system
        self.secret = secret
        self.bind = bind
        self.wid = wid
        self.conns: list[Conn] = []
        self.by_idx: dict[int, Conn] = {}
        self.errors: dict[str, int] = {}
        self.lost = 0
        self.tokens: dict[str, str] = {}
        # receive statistics
        self.hist: dict[int, list[int]] = {}  # step -> latency histogram
        self.delivered: dict[int, int] = {}  # step -> distinct deliveries
        self.dups = 0
        self.foreign = 0
        self.track_last = False
        self.last: dict[str, list[int]] = {}  # "sender:seq" -> [max µs, receivers, min µs]
        self.room_senders: dict[str, set[int]] = {}
        # sending
        self.senders: list[Conn] = []
        self.rate = 0.0
        self.step = 0
        self.next_i = 0
        self.next_t = 0.0
        self.interval = 0.0
        self.sent_steps: dict[int, dict[int, int]] = {}  # step -> sender -> count
        self.behind_max = 0.0
        self.skipped = 0
        self._tick: asyncio.TimerHandle | None = None
        self.resume_t: list[float] = []
        self.fast: FastReader | None = None  # when BENCH_FASTREAD names the library
        self.fast_read = False  # the scenario asked for it: ready connections go to `fast`

    def token(self, user: str) -> str:
        tok = self.tokens.get(user)
        if tok is None:
            now = int(time.time())
            tok = jwt.encode({"sub": user, "iat": now, "exp": now + 86400}, self.secret, "HS256")
            self.tokens[user] = tok
        return tok

    def note_error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    # Frames --------------------------------------------------------------------

    def on_frame(self, conn: Conn, payload: bytes, now: int) -> None:
        system = self.system
        if system == "parley":
            if payload.startswith(b'{"room":'):
                self.on_message(conn, payload, now, -1)
                return
            self.parley_control(conn, payload, now)
        elif system == "socketio":
            if payload.startswith(b'42["message",'):
                self.on_message(conn, payload, now, -1)
            elif payload == b"2":
                conn.write(b"3")
            elif payload.startswith(b"0{"):
                conn.write(b'40{"token":"' + self.token(conn.user).encode() + b'"}')
            elif payload.startswith(b"40"):
                conn.write(b'42["join","' + conn.room.encode() + b'"]')
            elif payload.startswith(b'42["joined"'):
                conn.set_ready()
            elif payload.startswith(b"44"):
                self.note_error("connect_error " + payload[2:80].decode(errors="replace"))
                if conn.ready_fut is not None and not conn.ready_fut.done():
                    conn.ready_fut.set_exception(ConnectionError("socket.io connect error"))
            elif payload.startswith(b"41"):
                self.note_error("socket.io disconnect")
        else:
            # json.dumps with its default separators, as the consumer writes it
            if payload.startswith(b'{"type": "message"'):
                self.on_message(conn, payload, now, -1)
            elif payload.startswith(b'{"type": "joined"'):
                conn.set_ready()
            else:
                self.note_error("frame " + payload[:60].decode(errors="replace"))

    def parley_control(self, conn: Conn, payload: bytes, now: int) -> None:
        if payload.startswith(b'{"type":"ack"'):
            conn.acks += 1
            return
        if payload.startswith(b'{"type":"presence"'):
            return
        frame = json.loads(payload)
        kind = frame.get("type")
        if kind == "history":
            if conn.since is not None:
                # A resume: every message after `since`, counted like live ones.
                for m in frame["messages"]:
                    body = m["body"].encode()
                    self.on_message(conn, body, now, m["seq"])
                if not conn.resumed:
                    conn.resumed = True
                    self.resume_t.append(time.monotonic())
            elif frame["messages"]:
                conn.last_seq = max(conn.last_seq, frame["messages"][-1]["seq"])
            conn.set_ready()
        elif kind == "error":
            self.note_error("error " + str(frame.get("code")))
        elif kind in ("hello", "subscribed", "pong", "unsubscribed"):
            return
        else:
            self.note_error("frame " + str(kind))

    def on_message(self, conn: Conn, payload: bytes, now: int, seq_hint: int) -> None:
        i = payload.find(MARK)
        if i < 0:
            self.note_error("message without marker")
            return
        j = payload.find(b"~", i + 3)
        sender_b, seq_b, step_b, t_b = payload[i + 3 : j].split(b":")
        sender = int(sender_b)
        seq = int(seq_b)
        step = int(step_b)
        if self.system == "parley":
            if seq_hint >= 0:
                room_seq = seq_hint
            else:
                k = payload.find(b'"seq":')
                room_seq = int(payload[k + 6 : payload.find(b",", k)])
            if room_seq > conn.last_seq:
                conn.last_seq = room_seq
        senders = self.room_senders.get(conn.room)
        if senders is not None and sender not in senders:
            self.foreign += 1
            return
        track = conn.tracks.get(sender)
        if track is None:
            track = conn.tracks[sender] = Track()
        if not track.add(seq):
            self.dups += 1
            return
        lat_us = (now - int(t_b)) // 1000
        if lat_us < 0:
            lat_us = 0
        hist = self.hist.get(step)
        if hist is None:
            hist = self.hist[step] = [0] * NBUCKETS
            self.delivered[step] = 0
        hist[int(math.log(lat_us + 1) * SCALE)] += 1
        self.delivered[step] += 1
        if self.track_last:
            key = f"{sender}:{seq}"
            rec = self.last.get(key)
            if rec is None:
                self.last[key] = [lat_us, 1, lat_us]  # slowest, receivers, fastest
            else:
                if lat_us > rec[0]:
                    rec[0] = lat_us
                elif lat_us < rec[2]:
                    rec[2] = lat_us
                rec[1] += 1

    # Commands ------------------------------------------------------------------

    async def open_one(self, conn: Conn, sem: asyncio.Semaphore, wait_s: float) -> str | None:
        loop = asyncio.get_running_loop()
        async with sem:
            conn.ready_fut = loop.create_future()
            sock: socket.socket | None = None
            made = False  # the transport owns the socket from then on
            try:
                sock = self.socket()
                await loop.sock_connect(sock, ("127.0.0.1", conn.port))
                await loop.create_connection(lambda: conn, sock=sock)
                made = True
                await asyncio.wait_for(conn.ready_fut, wait_s)
                return None
            except (OSError, TimeoutError, ConnectionError) as exc:
                if made and conn.transport is not None:
                    conn.transport.abort()
                elif sock is not None:
                    sock.close()
                return repr(exc)[:200]

    def socket(self) -> socket.socket:
        """A socket from this worker's own address, its port left to connect().

        A plain bind to port 0 must find a port no other socket of the address
        holds, TIME_WAIT ones included: with the tens of thousands an earlier
        run leaves for a minute, that search cost the kernel (counted as the
        load generator's CPU) four times the rest of a connection. Deferred to
        connect(), a port only has to be unique for its destination.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((self.bind, 0))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def connect(self, specs: list[list[Any]], concurrency: int, wait_s: float) -> None:
        sem = asyncio.Semaphore(concurrency)
        new = []
        for idx, user, room, port in specs:
            conn = Conn(self, idx, user, room, port)
            self.conns.append(conn)
            self.by_idx[idx] = conn
            new.append(conn)
            self.token(user)  # signing is the client's business, not the server's: before t0
        cpu0, t0 = cpu_self(), time.monotonic()
        results = await asyncio.gather(*(self.open_one(c, sem, wait_s) for c in new))
        t1 = time.monotonic()
        settle_heap()
        failures = [r for r in results if r is not None]
        emit(
            "connected",
            ok=len(new) - len(failures),
            failed=len(failures),
            t0=t0,
            t1=t1,
            cpu=cpu_self() - cpu0,
            first_error=failures[0] if failures else None,
        )

    async def reconnect(self, concurrency: int, wait_s: float) -> None:
        """Reconnect every closed connection with `since` = the last seq it saw."""
        self.drain()
        sem = asyncio.Semaphore(concurrency)
        todo = [c for c in self.conns if c.closed]
        for c in todo:
            c.since = c.last_seq
            c.resumed = False
        self.resume_t = []
        t0 = time.monotonic()
        results = await asyncio.gather(*(self.open_one(c, sem, wait_s) for c in todo))
        settle_heap()
        failures = [r for r in results if r is not None]
        emit(
            "reconnected",
            ok=len(todo) - len(failures),
            failed=len(failures),
            t0=t0,
            t_last=max(self.resume_t) if self.resume_t else None,
            first_error=failures[0] if failures else None,
        )

    def set_rate(self, senders: list[int], rate: float, step: int) -> None:
        settle_heap()  # the Tracks of the step before: made after the last freeze
        self.senders = [self.by_idx[i] for i in senders if i in self.by_idx]
        self.next_i = 0  # an index into the senders of the step before may be past the end
        self.rate = rate
        self.step = step
        self.sent_steps.setdefault(step, {})
        if not self.senders or rate <= 0:
            self.interval = 0.0
            if self._tick is not None:
                self._tick.cancel()
                self._tick = None
            return
        self.interval = 1.0 / (rate * len(self.senders))
        self.next_t = time.monotonic()
        if self._tick is not None:
            self._tick.cancel()  # it may be set for the old rate's next send
        self._tick = asyncio.get_running_loop().call_later(0.002, self.tick)

    def tick(self) -> None:
        """Send what is due: every sender at `rate`, evenly spread over the period."""
        now = time.monotonic()
        behind = now - self.next_t
        if behind > self.behind_max:
            self.behind_max = behind
        if behind > 1.0:  # the generator cannot keep up: skip rather than burst
            missed = int(behind / self.interval)
            self.skipped += missed
            self.next_t = now
        senders = self.senders
        counts = self.sent_steps[self.step]
        nsend = len(senders)
        step = self.step
        i = self.next_i
        t = self.next_t
        interval = self.interval
        while t <= now:
            conn = senders[i]
            if conn.ready:
                conn.send_chat(step)
                counts[conn.idx] = counts.get(conn.idx, 0) + 1
            i += 1
            if i == nsend:
                i = 0
            t += interval
        self.next_i = i
        self.next_t = t
        # Wake for the next send, not every 2 ms: at one message per second a
        # polling timer cost the worker more CPU than the frames it reads.
        wait = max(0.002, t - time.monotonic())
        self._tick = asyncio.get_running_loop().call_later(wait, self.tick)

    def drain(self) -> None:
        if self.fast is not None:
            self.fast.drain()

    def stats(self) -> None:
        self.drain()
        emit(
            "stats",
            delivered={str(k): v for k, v in self.delivered.items()},
            hist={str(k): {str(b): c for b, c in enumerate(h) if c} for k, h in self.hist.items()},
            dups=self.dups,
            foreign=self.foreign,
            errors=self.errors,
            lost_conns=self.lost,
            ready=sum(1 for c in self.conns if c.ready),
            closed=sum(1 for c in self.conns if c.closed),
            cpu=cpu_self(),
            behind_max=self.behind_max,
            skipped=self.skipped,
            acks=sum(c.acks for c in self.conns),
            resumed=sum(1 for c in self.conns if c.resumed),
            t_last_resume=max(self.resume_t) if self.resume_t else None,
        )

    def verify(self, sent: dict[str, int]) -> None:
        """Per receiver, per sender of its room: lost = sent - distinct received."""
        self.drain()
        lost = 0
        expected = 0
        got = 0
        reordered = 0
        worst: list[str] = []
        for conn in self.conns:
            for s in self.room_senders.get(conn.room, ()):
                n = sent.get(str(s), 0)
                track = conn.tracks.get(s)
                have = track.count if track else 0
                expected += n
                got += have
                if track is not None:
                    reordered += track.reordered
                if have < n:
                    lost += n - have
                    if len(worst) < 5:
                        worst.append(f"{conn.user} missed {n - have} of {n} from {s}")
        emit(
            "verified",
            expected=expected,
            received=got,
            lost=lost,
            dups=self.dups,
            foreign=self.foreign,
            reordered=reordered,
            examples=worst,
        )

    def close_all(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self.fast is not None:
            self.fast.release_all()
        for c in self.conns:
            if c.transport is not None and not c.transport.is_closing():
                c.transport.write(masked(0x8, (1000).to_bytes(2, "big")))
                c.transport.close()


async def serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Any) -> None:
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    handlers: dict[str, Callable[[dict[str, Any]], None]] = {
        "connect": lambda c: spawn(worker.connect(c["specs"], c["concurrency"], c["timeout"])),
        "reconnect": lambda c: spawn(worker.reconnect(c["concurrency"], c["timeout"])),
        "rate": lambda c: worker.set_rate(c["senders"], c["rate"], c["step"]),
        "stats": lambda c: worker.stats(),
        "verify": lambda c: worker.verify(c["sent"]),
        "close": lambda c: worker.close_all(),
    }
    lib = os.environ.get("BENCH_FASTREAD")
    if lib:
        worker.fast = FastReader(worker, lib)
    emit("hello", pid=os.getpid())
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        name = cmd["cmd"]
        if name == "quit":
            break
        if name == "config":
            worker.track_last = bool(cmd.get("track_last"))
            worker.fast_read = bool(cmd.get("fast_read")) and worker.fast is not None
            worker.room_senders = {r: set(s) for r, s in cmd.get("room_senders", {}).items()}
            emit("configured", reader="fastread" if worker.fast_read else "uvloop")
        elif name == "sent":
            worker.drain()
            emit(
                "sent",
                steps={
                    str(k): {str(i): n for i, n in v.items()} for k, v in worker.sent_steps.items()
                },
                last=worker.last if worker.track_last else None,
            )
        else:
            handlers[name](cmd)
    worker.close_all()
    if worker.fast is not None:
        worker.fast.stop()
    await asyncio.sleep(0.1)


def main() -> None:
    system, bind, wid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    secret = os.environ["BENCH_JWT_SECRET"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop

    uvloop.run(serve(Worker(system, secret, bind, wid)))


if __name__ == "__main__":
    main()
