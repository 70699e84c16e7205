"""A WebSocket client on a plain TCP socket, for what aiohttp's client will not do.

It writes frames byte by byte (protocol violations, odd framing, data after
a close frame) and reads the server's frames, EOF included, as they arrive.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct

import orjson

from tests.harness import ServerProcess, token

TEXT, CONT, CLOSE, WS_PING, WS_PONG = 0x1, 0x0, 0x8, 0x9, 0xA


def ws_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, length: int | None = None
) -> bytes:
    """One client frame (masked, as RFC 6455 requires of clients)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class _DataBeforeReset(asyncio.StreamReaderProtocol):
    """Keeps what the server sent readable when a reset follows it.

    A server failing a connection closes the socket right after its close
    frame; frames of ours still unread there make the kernel answer with a
    reset. asyncio's reader raises a reset before handing over what it had
    buffered, so the close frame, whose code the tests check, would be lost
    to the test although it arrived.
    """

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(None)


class RawSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, node: ServerProcess, user: str) -> RawSocket:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, protocol = await loop.create_connection(
            lambda: _DataBeforeReset(reader), "127.0.0.1", node.port
        )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws?token={token(user)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        sock = cls(reader, writer)
        opcode, hello = await sock.read()
        assert opcode == TEXT and orjson.loads(hello)["type"] == "hello"
        return sock

    async def read(self, timeout: float = 10.0) -> tuple[int, bytes]:
        async def one() -> tuple[int, bytes]:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            return b0 & 0x0F, await self.reader.readexactly(n)

        return await asyncio.wait_for(one(), timeout)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass
