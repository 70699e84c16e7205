"""A transport that records what a SessionWriter writes, and a frame reader."""

from __future__ import annotations

import struct
from typing import Any

import orjson


def read_frames(data: bytes) -> list[bytes]:
    """The payloads of unmasked, final text frames (RFC 6455 §5.2), checked strictly."""
    payloads: list[bytes] = []
    pos = 0
    while pos < len(data):
        first, second = data[pos], data[pos + 1]
        assert first == 0x81, f"not a final text frame: {first:#x}"
        assert second & 0x80 == 0, "a server frame must not be masked"
        size = second & 0x7F
        pos += 2
        if size == 126:
            (size,) = struct.unpack_from("!H", data, pos)
            pos += 2
            assert size >= 126, "the 16-bit length is only for 126..65535"
        elif size == 127:
            (size,) = struct.unpack_from("!Q", data, pos)
            pos += 8
            assert 65536 <= size < 2**63, "the 64-bit length is only for 65536 and up"
        payload = data[pos : pos + size]
        assert len(payload) == size, "truncated frame"
        payloads.append(payload)
        pos += size
    return payloads


class FakeTransport:
    def __init__(self, buffered: int = 0) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.buffered = buffered  # what the "kernel" still holds

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def frames(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for payload in read_frames(b"".join(self.writes)):
            obj = orjson.loads(payload)
            assert isinstance(obj, dict)
            out.append(obj)
        return out
