"""Checks for variant B (raw pre-encoded frames written to aiohttp's transport).

Runs a few scenarios against ``srv_aiohttp_raw.make_app`` on 127.0.0.1 and
prints one line per check.  Usage: python check_raw.py [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import WSMsgType, web
from common import WS_PATH, encode_text_frame, message_text, run_with_loop
from srv_aiohttp_raw import MAX_WRITE_BUFFER, RawHub, RawSession, make_app

results: list[tuple[str, bool, str]] = []


def report(name: str, ok: bool, detail: str) -> None:
    results.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}", flush=True)


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records]


class Server:
    def __init__(
        self,
        hub: RawHub,
        compress: bool = False,
        on_text: Callable[[RawSession, str], Awaitable[None] | None] | None = None,
    ) -> None:
        self.hub = hub
        self.compress = compress
        self.on_text = on_text
        self.ended: list[tuple[RawSession, web.Request]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> Server:
        app = make_app(
            self.hub, self.on_text, lambda s, r: self.ended.append((s, r)), self.compress
        )
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WS_PATH}"

    async def one_session(self, within: float = 5.0) -> RawSession:
        deadline = time.monotonic() + within
        while not self.hub.sessions:
            if time.monotonic() > deadline:
                raise TimeoutError("no session")
            await asyncio.sleep(0.01)
        return next(iter(self.hub.sessions))


class RawClient:
    """Minimal client on a plain socket: records every server frame in order."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self, rcvbuf: int | None = None) -> None:
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        self.reader, self.writer = await asyncio.open_connection(sock=sock, limit=2**20)
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write(
            f"GET {WS_PATH} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, opcode: int, payload: bytes) -> None:
        assert self.writer is not None and len(payload) < 126
        self.writer.write(bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload)

    async def frames_until_eof(self, within: float = 5.0) -> list[tuple[int, bytes]]:
        assert self.reader is not None
        data = await asyncio.wait_for(self.reader.read(), within)  # until EOF
        frames: list[tuple[int, bytes]] = []
        pos = 0
        while pos + 2 <= len(data):
            b0, ln = data[pos], data[pos + 1] & 0x7F
            hl = 2
            if ln == 126:
                ln, hl = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
            elif ln == 127:
                ln, hl = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            frames.append((b0 & 0x0F, data[pos + hl : pos + hl + ln]))
            pos += hl + ln
        return frames

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def opcodes(frames: list[tuple[int, bytes]]) -> str:
    names = {1: "T", 2: "B", 8: "C", 9: "Pi", 10: "Po"}
    out: list[str] = []
    for op, _ in frames:
        name = names.get(op, str(op))
        if out and out[-1].startswith(name + "x"):
            out[-1] = f"{name}x{int(out[-1].split('x')[1]) + 1}"
        else:
            out.append(f"{name}x1")
    return " ".join(out)


# --------------------------------------------------------------------------- checks


async def check_aiohttp_client_sees_valid_frames() -> None:
    sizes = [0, 1, 125, 126, 200, 65535, 65536, 200_000]
    payloads = ["x" * n for n in sizes] + ["é" * 70] + [message_text(i) for i in range(100)]
    for compress in (False, True):
        hub = RawHub("session", heartbeat=0.05)  # aiohttp pings interleave with raw frames
        async with Server(hub, compress=compress) as srv, aiohttp.ClientSession() as http:
            async with http.ws_connect(srv.url, compress=15 if compress else 0) as ws:
                session = await srv.one_session()
                # aiohttp answers pings only inside receive(): keep a reader running.
                inbox: asyncio.Queue[aiohttp.WSMessage] = asyncio.Queue()

                async def reader(
                    ws: aiohttp.ClientWebSocketResponse = ws,
                    inbox: asyncio.Queue[aiohttp.WSMessage] = inbox,
                ) -> None:
                    while True:
                        msg = await ws.receive()
                        await inbox.put(msg)
                        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                            return

                reading = asyncio.create_task(reader())
                own_sent = 0
                for i, p in enumerate(payloads):
                    hub.publish(encode_text_frame(p.encode()))
                    if i % 7 == 0:  # aiohttp's own (maybe compressed) frames in between
                        await session.ws.send_str("own")
                        own_sent += 1
                    if i % 3 == 0:
                        await asyncio.sleep(0.06)  # let heartbeat pings go out in between
                # send_str() writes at once, raw frames on the next loop turn, so the
                # relative order of the two kinds differs; raw ones must arrive in order.
                got: list[str] = []
                own = 0
                while len(got) < len(payloads) or own < own_sent:
                    msg = await asyncio.wait_for(inbox.get(), 5)
                    if msg.type is not WSMsgType.TEXT:
                        raise AssertionError(f"unexpected {msg.type}")
                    if msg.data == "own":
                        own += 1
                    else:
                        got.append(msg.data)
                reading.cancel()
                ext = ws._response.headers.get("Sec-WebSocket-Extensions") if ws._response else None
                deflate = "on" if compress else "off"
                report(
                    f"aiohttp client receives raw frames (permessage-deflate {deflate})",
                    got == payloads and own == own_sent and not ws.closed,
                    f"{len(got)} raw text frames (7/16/64-bit lengths, up to 200 kB) "
                    "equal and in order, "
                    f"{own} aiohttp send_str frames interleaved, 0.05 s heartbeat pings answered, "
                    f"negotiated extensions: {ext}",
                )


async def check_close_ordering() -> None:
    hub = RawHub("session")
    async with Server(hub) as srv:
        # a) RawSession.close(): flush first, then aiohttp's close frame.
        client = RawClient(srv.port)
        await client.connect()
        session = await srv.one_session()
        for i in range(100):
            session.enqueue(encode_text_frame(message_text(i).encode()))
        closing = asyncio.create_task(session.close(code=1001))
        await asyncio.sleep(0.05)
        client.send(0x8, (1001).to_bytes(2, "big"))
        frames = await client.frames_until_eof()
        await closing
        report(
            "session.close() flushes queue before close frame",
            opcodes(frames) == "Tx100 Cx1",
            f"client saw: {opcodes(frames)}",
        )
        client.close()
        await asyncio.sleep(0.05)

        # b) publish then ws.close() in the same coroutine: the queued frames are
        #    dropped by the ws.closed guard instead of following the close frame.
        client = RawClient(srv.port)
        await client.connect()
        session = await srv.one_session()

        async def publish_then_close(s: RawSession) -> None:
            for i in range(100):
                s.enqueue(encode_text_frame(message_text(i).encode()))
            await s.ws.close()

        closing = asyncio.create_task(publish_then_close(session))
        await asyncio.sleep(0.05)
        client.send(0x8, (1000).to_bytes(2, "big"))
        frames = await client.frames_until_eof()
        await closing
        report(
            "publish then plain ws.close(): queued frames dropped, none after close",
            opcodes(frames) == "Cx1" and session.dropped_frames == 100,
            f"client saw: {opcodes(frames)}, dropped_frames={session.dropped_frames}",
        )
        client.close()


async def check_close_window() -> None:
    """ws.close() awaited by the handler itself waits (up to 10 s) for the peer's
    close frame with the transport still open: is_closing() is False then."""
    hub = RawHub("session")

    async def on_text(session: RawSession, text: str) -> None:
        if text == "kick":
            await session.close(code=1008)

    for guard in ("is_closing", "RawSession"):
        async with Server(hub, on_text=on_text) as srv:
            client = RawClient(srv.port)
            await client.connect()
            session = await srv.one_session()
            states: list[str] = []
            stop = asyncio.Event()

            async def pump(
                session: RawSession, guard: str, states: list[str], stop: asyncio.Event
            ) -> None:
                seq = 0
                while not stop.is_set():
                    frame = encode_text_frame(message_text(seq).encode())
                    if guard == "is_closing":
                        if not session.transport.is_closing():
                            session.transport.write(frame)
                    else:
                        session.enqueue(frame)
                    if session.ws.closed and not states:
                        states.append(
                            f"ws.closed={session.ws.closed} "
                            f"transport.is_closing()={session.transport.is_closing()}"
                        )
                    seq += 1
                    await asyncio.sleep(0.005)

            task = asyncio.create_task(pump(session, guard, states, stop))
            await asyncio.sleep(0.05)
            client.send(0x1, b"kick")
            await asyncio.sleep(0.1)  # peer answers the close late
            client.send(0x8, (1008).to_bytes(2, "big"))
            frames = await client.frames_until_eof()
            stop.set()
            await task
            order = opcodes(frames)
            after = order.split("Cx1", 1)[1].strip() if "Cx1" in order else "?"
            if guard == "is_closing":
                report(
                    "is_closing() alone lets data follow the close frame",
                    bool(after),
                    f"during the handler's own ws.close(): {states[0] if states else '?'}; "
                    f"client saw {order} (data after close = RFC 6455 violation)",
                )
            else:
                report(
                    "RawSession guard (ws.closed) keeps the close frame last",
                    not after,
                    f"client saw {order}",
                )
            client.close()


async def check_client_close_during_broadcast(loop_name: str) -> None:
    hub = RawHub("hub")
    capture = LogCapture()
    logging.getLogger().addHandler(capture)
    loop_errors: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _l, ctx: loop_errors.append(str(ctx.get("message"))))
    try:
        async with Server(hub) as srv:
            client = RawClient(srv.port)
            await client.connect()
            session = await srv.one_session()
            stop = False

            async def pump() -> None:
                seq = 0
                while not stop:
                    for _ in range(5):
                        hub.publish(encode_text_frame(message_text(seq).encode()), [session])
                        seq += 1
                    await asyncio.sleep(0)

            task = asyncio.create_task(pump())
            await asyncio.sleep(0.1)
            client.send(0x8, (1000).to_bytes(2, "big"))
            frames = await client.frames_until_eof()
            await asyncio.sleep(0.1)
            stop = True
            await task
            order = opcodes(frames)
            after_close = order.split("Cx1", 1)[1].strip() if "Cx1" in order else "?"
            ok = order.endswith("Cx1") and not loop_errors and not capture.records
            report(
                "client-initiated close during a broadcast",
                ok,
                f"client saw {order}; frames after server close: {after_close or 'none'}; "
                f"session dropped {session.dropped_frames} frames; "
                f"log records={capture.messages()[:2]} loop errors={loop_errors[:2]}",
            )
            client.close()

            # request.transport after the connection is gone, and writes to a stale transport
            await asyncio.sleep(0.05)
            ended_session, request = srv.ended[-1]
            stale = ended_session.transport
            outcome = "no exception"
            try:
                for _ in range(10):
                    stale.write(b"\x81\x00")
            except Exception as exc:  # uvloop raises on a closed handle
                outcome = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.01)
            warnings = [m for m in capture.messages() if "socket.send" in m or "closed" in m]
            report(
                f"state after connection loss ({loop_name})",
                True,
                f"request.transport={request.transport!r}; "
                f"cached transport.is_closing()={stale.is_closing()}; "
                f"10 writes to it -> {outcome}; log: {warnings[:1] or 'nothing'}",
            )
    finally:
        logging.getLogger().removeHandler(capture)
        loop.set_exception_handler(None)


async def check_backpressure() -> None:
    hub = RawHub("session")
    async with Server(hub) as srv:
        client = RawClient(srv.port)
        await client.connect(rcvbuf=4096)  # a consumer that never reads
        session = await srv.one_session()
        req = session.ws._req  # type: ignore[attr-defined]
        protocol = req.protocol if req is not None else None
        chunk = encode_text_frame(b"x" * 60_000)
        sizes: list[int] = []
        paused_seen = False
        aborted_at = None
        for turn in range(200):
            hub.publish(chunk, [session])
            await asyncio.sleep(0)
            size = session.transport.get_write_buffer_size()
            sizes.append(size)
            paused_seen |= bool(protocol is not None and protocol.writing_paused)
            if session.transport.is_closing():
                aborted_at = turn
                break
        # aiohttp's own writer does not know about our bytes: a send_str() now does not wait,
        # because its _output_size counter only counts frames it wrote itself.
        report(
            "slow consumer: buffer grows, protocol paused, cut at MAX_WRITE_BUFFER",
            paused_seen and aborted_at is not None,
            f"write buffer reached {max(sizes) / 2**20:.1f} MiB "
            f"(limit {MAX_WRITE_BUFFER / 2**20:.0f} MiB), "
            f"aiohttp protocol.writing_paused seen={paused_seen}, "
            f"aborted after {aborted_at} turns, "
            f"dropped {session.dropped_frames} frames",
        )
        client.close()


async def check_heartbeat() -> None:
    hub = RawHub("session", heartbeat=0.2)
    async with Server(hub) as srv:
        # a) a peer that reads but never answers pings is closed after heartbeat + heartbeat/2
        client = RawClient(srv.port)
        await client.connect()
        session = await srv.one_session()
        t0 = time.monotonic()

        async def traffic() -> None:
            while session.writable:
                hub.publish(encode_text_frame(b'{"t":1}'), [session])
                await asyncio.sleep(0.01)

        task = asyncio.create_task(traffic())
        frames = await client.frames_until_eof(5)
        elapsed = time.monotonic() - t0
        await task
        report(
            "heartbeat: outgoing raw traffic does not keep a mute peer alive",
            session.transport.is_closing() and 0.2 < elapsed < 1.5,
            f"closed after {elapsed:.2f} s (heartbeat 0.2 s) with {opcodes(frames)}; "
            "aiohttp resets its heartbeat only on received data, raw writes are invisible to it; "
            "the abort is a plain transport.close() (no close frame), "
            "so RawSession must check writable before writing",
        )
        client.close()

        # b) a normal aiohttp client answers pings: stays up under raw traffic
        async with aiohttp.ClientSession() as http, http.ws_connect(srv.url, autoping=True) as ws:
            await asyncio.sleep(0.05)
            session = next(s for s in hub.sessions)
            got = 0

            async def reader() -> None:
                nonlocal got
                while True:
                    msg = await ws.receive()  # pongs are sent from inside receive()
                    if msg.type is not WSMsgType.TEXT:
                        return
                    got += 1

            reading = asyncio.create_task(reader())
            n = 0
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                hub.publish(encode_text_frame(b'{"t":2}'), [session])
                n += 1
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.1)
            reading.cancel()
            report(
                "heartbeat with a ponging client under raw traffic",
                got == n and session.writable,
                f"{got}/{n} frames over 1 s with 0.2 s heartbeat, still open={session.writable}",
            )


async def main(loop_name: str) -> None:
    logging.basicConfig(level=logging.WARNING)
    checks: list[Callable[[], Awaitable[None]]] = [
        check_aiohttp_client_sees_valid_frames,
        check_close_ordering,
        check_close_window,
        lambda: check_client_close_during_broadcast(loop_name),
        check_backpressure,
        check_heartbeat,
    ]
    for check in checks:
        try:
            await asyncio.wait_for(check(), 30)
        except Exception as exc:
            report(getattr(check, "__name__", "check"), False, f"{type(exc).__name__}: {exc}")
    failed = sum(not ok for _, ok, _ in results)
    print(f"{len(results) - failed} passed, {failed} failed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    run_with_loop(main(args.loop), args.loop)
