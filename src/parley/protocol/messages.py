"""A chat message as the protocol shows it, and the encoders of server frames.

A `message` frame is encoded once per message, whatever the number of
recipients: `ChatMessage.frame_json` caches it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import orjson

from parley.protocol.codes import ErrorCode


def format_ts(ts_ms: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-26T06:00:00.123Z."""
    moment = dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def message_id(partition: int, offset: int) -> str:
    """A message id derived from its place in the log: unique, stable across re-reads."""
    return f"{partition}-{offset}"


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

    def frame_json(self) -> bytes:
        """The `message` frame's JSON, encoded on first use and shared after."""
        if self._frame is None:
            obj = self.as_dict()
            obj["type"] = "message"
            self._frame = orjson.dumps(obj)
        return self._frame


def encode(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


def with_ref(obj: dict[str, Any], ref: str | None) -> dict[str, Any]:
    if ref is not None:
        obj["ref"] = ref
    return obj


def error_frame(code: ErrorCode, message: str, ref: str | None = None) -> bytes:
    return encode(with_ref({"type": "error", "code": str(code), "message": message}, ref))


def ack_frame(msg: ChatMessage, ref: str | None) -> bytes:
    return encode(
        with_ref(
            {
                "type": "ack",
                "room": msg.room,
                "client_id": msg.client_id,
                "id": msg.id,
                "seq": msg.seq,
                "ts": format_ts(msg.ts_ms),
            },
            ref,
        )
    )


def ack_body(msg: ChatMessage) -> dict[str, Any]:
    """The ack as the REST API answers it (no `type`)."""
    return {
        "room": msg.room,
        "client_id": msg.client_id,
        "id": msg.id,
        "seq": msg.seq,
        "ts": format_ts(msg.ts_ms),
    }


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
