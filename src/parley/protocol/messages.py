"""A chat message as the protocol shows it, and the encoders of server frames.

A `message` frame is encoded once per message, whatever the number of
recipients: `ChatMessage.frame_json` caches it.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from typing import Any

import orjson

from parley.protocol.codes import ErrorCode


@functools.lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def format_ts(ts_ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-26T06:00:00.123Z.

    Every frame of a message carries it, and messages come many to a second:
    the second's text is kept (strftime was 7 % of a busy gateway's samples).
    """
    seconds, ms = divmod(ts_ms, 1000)
    return f"{_second(seconds)}{ms:03d}Z"


# A message's ts_ms fits in this many bits (ms since 1970 until the year 2527):
# records outside are not Parley's, and gateways pack ts_ms in an int with it.
TS_BITS = 44


def message_id(partition: int, offset: int) -> str:
    """A message id derived from its place in the log: unique, stable across re-reads."""
    return f"{partition}-{offset}"


@dataclass(slots=True, frozen=True)
class Ack:
    """What answers a send: enough to rebuild the `ack`, without the body.

    The idempotency map keeps one per message over its whole window, so it
    holds no body.
    """

    room: str
    client_id: str
    id: str
    seq: int
    ts_ms: int


@dataclass(slots=True)
class ChatMessage:
    room: str
    id: str
    seq: int
    sender: str
    body: str
    ts_ms: int
    client_id: str
    _frame: bytes | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "room": self.room,
            "id": self.id,
            "seq": self.seq,
            "sender": self.sender,
            "body": self.body,
            "ts": format_ts(self.ts_ms),
            "client_id": self.client_id,
        }

    def ack(self) -> Ack:
        return Ack(self.room, self.client_id, self.id, self.seq, self.ts_ms)

    def frame_json(self) -> bytes:
        """The `message` frame's JSON, encoded on first use and shared after."""
        if self._frame is None:
            obj = self.as_dict()
            obj["type"] = "message"
            # A copy: orjson's result keeps a 4 KiB buffer behind it (orjson#483),
            # and frames live as long as the room's window.
            self._frame = bytes(memoryview(orjson.dumps(obj)))
        return self._frame


def encode(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


def with_ref(obj: dict[str, Any], ref: str | None) -> dict[str, Any]:
    if ref is not None:
        obj["ref"] = ref
    return obj


def error_frame(code: ErrorCode, message: str, ref: str | None = None) -> bytes:
    return encode(with_ref({"type": "error", "code": str(code), "message": message}, ref))


def ack_body(ack: Ack) -> dict[str, Any]:
    """The ack as the REST API answers it (the frame adds `type` and `ref`)."""
    return {
        "room": ack.room,
        "client_id": ack.client_id,
        "id": ack.id,
        "seq": ack.seq,
        "ts": format_ts(ack.ts_ms),
    }


def ack_frame(ack: Ack, ref: str | None) -> bytes:
    return encode(with_ref({"type": "ack", **ack_body(ack)}, ref))


def history_frame(room: str, messages: list[ChatMessage], has_more: bool, ref: str | None) -> bytes:
    return encode(
        with_ref(
            {
                "type": "history",
                "room": room,
                "messages": [m.as_dict() for m in messages],
                "has_more": has_more,
            },
            ref,
        )
    )
