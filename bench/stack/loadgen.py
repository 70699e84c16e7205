"""Load-generator worker: many cheap WebSocket client connections in one process.

Each connection is a plain ``asyncio.Protocol`` that does the opening handshake
itself and then only walks frame headers to count messages (no payload copy,
no coroutine per frame).  Pings are answered, a close frame is echoed.

The worker is driven by line commands on stdin and answers with JSON lines:

  connect N CONCURRENCY   open N connections, at most CONCURRENCY handshakes in flight
  arm M                   reset counters; report "done" once every connection got M messages
  status                  report counters
  close                   close all connections
  quit                    exit
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import resource
import sys
import time
from typing import Any, cast

from common import WS_PATH, raise_nofile_limit, run_with_loop

_KEY = base64.b64encode(b"parley-bench-key").decode()
_ACCEPT = base64.b64encode(
    hashlib.sha1((_KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
)


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"ev": event, **fields}) + "\n")
    sys.stdout.flush()


def cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """Client-to-server frame.  Mask key 0 keeps it cheap (XOR with 0)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    else:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    return header + b"\x00\x00\x00\x00" + payload


class Counter(asyncio.Protocol):
    """One client connection that counts complete data messages."""

    __slots__ = (
        "_head",
        "_open",
        "_partial",
        "_skip",
        "count",
        "handshake",
        "reached",
        "transport",
        "worker",
    )

    def __init__(self, worker: Worker, request: bytes) -> None:
        self.worker = worker
        self.transport: asyncio.Transport | None = None
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._head = request  # request until sent, then response buffer
        self._open = False
        self._skip = 0
        self._partial = b""
        self.count = 0
        self.reached = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.write(self._head)
        self._head = b""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionResetError("closed during handshake"))
        self.worker.lost += 1

    def data_received(self, data: bytes) -> None:
        if self._open:
            self._feed(data)
            return
        head = self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            self._head = head
            return
        self._head = b""
        status = head[:end]
        if not status.startswith(b"HTTP/1.1 101") or _ACCEPT not in status:
            self.handshake.set_exception(ConnectionError(status[:80].decode("latin-1")))
            assert self.transport is not None
            self.transport.close()
            return
        self._open = True
        self.handshake.set_result(None)
        if end + 4 < len(head):
            self._feed(head[end + 4 :])

    def _feed(self, data: bytes) -> None:
        n = len(data)
        pos = self._skip
        if pos:
            if pos >= n:
                self._skip = pos - n
                return
            self._skip = 0
        if self._partial:
            data = self._partial + data[pos:]
            n = len(data)
            pos = 0
            self._partial = b""
        count = 0
        while pos < n:
            if pos + 2 > n:
                break
            b0 = data[pos]
            length = data[pos + 1]
            if length < 126:
                hl = 2
            elif length == 126:
                if pos + 4 > n:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                hl = 4
            elif length == 127:
                if pos + 10 > n:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hl = 10
            else:  # mask bit set: servers must not mask
                self.worker.errors += 1
                assert self.transport is not None
                self.transport.abort()
                return
            opcode = b0 & 0x0F
            if opcode >= 8:  # control frame: needs its payload
                if pos + hl + length > n:
                    break
                self._control(opcode, data[pos + hl : pos + hl + length])
            elif b0 & 0x80:  # FIN of a data message
                count += 1
            pos += hl + length
        if pos > n:
            self._skip = pos - n
        elif pos < n:
            self._partial = data[pos:]
        if count:
            self.count += count
            if not self.reached and self.count >= self.worker.target:
                self.reached = True
                self.worker.connection_reached()

    def _control(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == 9:  # ping -> pong
            self.transport.write(masked_frame(0xA, payload))
        elif opcode == 8:  # close -> echo and close
            if not self.transport.is_closing():
                self.transport.write(masked_frame(0x8, payload[:2]))
                self.transport.close()

    def send_text(self, text: str) -> None:
        assert self.transport is not None
        self.transport.write(masked_frame(0x1, text.encode()))


class Worker:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.request = (
            f"GET {WS_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.conns: list[Counter] = []
        self.target = 1 << 62
        self.reached = 0
        self.lost = 0
        self.errors = 0
        self._arm_cpu = 0.0
        self._arm_time = 0.0

    async def connect(self, n: int, concurrency: int) -> None:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(concurrency)
        failures: list[str] = []

        async def one() -> None:
            async with sem:
                try:
                    _, proto = await loop.create_connection(
                        lambda: Counter(self, self.request), self.host, self.port
                    )
                    await asyncio.wait_for(proto.handshake, 30)
                    self.conns.append(proto)
                except (TimeoutError, OSError) as exc:
                    failures.append(repr(exc))

        cpu0, t0 = cpu_self(), time.monotonic()
        await asyncio.gather(*(one() for _ in range(n)))
        t1 = time.monotonic()
        emit(
            "connected",
            ok=n - len(failures),
            failed=len(failures),
            t0=t0,
            t1=t1,
            cpu=cpu_self() - cpu0,
            first_error=failures[0] if failures else None,
        )

    def arm(self, target: int) -> None:
        self.target = target
        self.reached = 0
        for c in self.conns:
            c.count = 0
            c.reached = False
        self._arm_cpu = cpu_self()
        self._arm_time = time.monotonic()
        emit("armed", conns=len(self.conns))
        if not self.conns:
            self.connection_reached()

    def connection_reached(self) -> None:
        self.reached += 1
        if self.reached >= len(self.conns):
            now = time.monotonic()
            emit(
                "done",
                t=now,
                frames=sum(c.count for c in self.conns),
                cpu=cpu_self() - self._arm_cpu,
                wall=now - self._arm_time,
            )

    def status(self) -> None:
        emit(
            "status",
            conns=len(self.conns),
            reached=self.reached,
            frames=sum(c.count for c in self.conns),
            lost=self.lost,
            errors=self.errors,
        )

    async def close_all(self) -> None:
        for c in self.conns:
            if c.transport is not None and not c.transport.is_closing():
                c.transport.write(masked_frame(0x8, (1000).to_bytes(2, "big")))
                c.transport.close()
        self.conns.clear()
        await asyncio.sleep(0.05)
        emit("closed")


async def serve_commands(host: str, port: int) -> None:
    worker = Worker(host, port)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    emit("hello", pid=os.getpid())
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd, *args = line.split()
        if cmd == "connect":
            task = loop.create_task(worker.connect(int(args[0]), int(args[1])))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif cmd == "arm":
            worker.arm(int(args[0]))
        elif cmd == "status":
            worker.status()
        elif cmd == "close":
            await worker.close_all()
        elif cmd == "quit":
            break
    await worker.close_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    args = parser.parse_args()
    raise_nofile_limit()
    run_with_loop(serve_commands(args.host, args.port), args.loop)


if __name__ == "__main__":
    main()
