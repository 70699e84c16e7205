"""Client frames as typed values, and the parser that turns text into them.

Every check of PROTOCOL.md that needs no state happens here: JSON shape, field
types, id syntax, body size. The gateway only ever sees a well-typed frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from parley.protocol.codes import ErrorCode
from parley.protocol.errors import FrameError

MAX_BODY_CHARS = 4096
MAX_ID_CHARS = 64
MAX_HISTORY_LIMIT = 100
MAX_INT = 2**63 - 1  # seqs are 64-bit offsets; anything larger is not a seq
DEFAULT_HISTORY_LIMIT = 50


@dataclass(slots=True, frozen=True)
class Subscribe:
    room: str
    since: int | None
    ref: str | None


@dataclass(slots=True, frozen=True)
class Unsubscribe:
    room: str
    ref: str | None


@dataclass(slots=True, frozen=True)
class Send:
    room: str
    client_id: str
    body: str
    ref: str | None


@dataclass(slots=True, frozen=True)
class History:
    room: str
    before: int | None
    limit: int
    ref: str | None


@dataclass(slots=True, frozen=True)
class Typing:
    room: str
    ref: str | None


@dataclass(slots=True, frozen=True)
class Read:
    room: str
    seq: int
    ref: str | None


@dataclass(slots=True, frozen=True)
class Ping:
    ref: str | None


ClientFrame = Subscribe | Unsubscribe | Send | History | Typing | Read | Ping


class _Fields:
    """Typed access to one decoded JSON object, raising `bad_request` on a wrong type."""

    __slots__ = ("obj", "ref")

    def __init__(self, obj: dict[str, Any], ref: str | None) -> None:
        self.obj = obj
        self.ref = ref

    def _bad(self, message: str) -> FrameError:
        return FrameError(ErrorCode.BAD_REQUEST, message, self.ref)

    def text(self, name: str) -> str:
        value = self.obj.get(name)
        if value is None:
            raise self._bad(f"missing field {name!r}")
        if not isinstance(value, str):
            raise self._bad(f"field {name!r} must be a string")
        return value

    def integer(self, name: str, *, minimum: int, default: int | None = None) -> int | None:
        value = self.obj.get(name)
        if value is None:
            return default
        # bool is an int in Python, never in the protocol.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._bad(f"field {name!r} must be an integer")
        if value < minimum:
            raise self._bad(f"field {name!r} must be >= {minimum}")
        if value > MAX_INT:
            raise self._bad(f"field {name!r} is too large")
        return value

    def required_integer(self, name: str, *, minimum: int) -> int:
        value = self.integer(name, minimum=minimum)
        if value is None:
            raise self._bad(f"missing field {name!r}")
        return value


def decode_json_object(data: str | bytes) -> dict[str, Any]:
    """Decode one frame's JSON, which must be an object."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise FrameError(ErrorCode.BAD_REQUEST, "frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise FrameError(ErrorCode.BAD_REQUEST, "frame must be a JSON object")
    return obj


def _ref_of(obj: dict[str, Any]) -> str | None:
    ref = obj.get("ref")
    if ref is None:
        return None
    if not isinstance(ref, str) or len(ref) > MAX_ID_CHARS:
        raise FrameError(ErrorCode.BAD_REQUEST, "ref must be a string of at most 64 chars")
    return ref


def check_client_id(client_id: str, ref: str | None = None) -> str:
    if not 1 <= len(client_id) <= MAX_ID_CHARS:
        raise FrameError(ErrorCode.BAD_REQUEST, "client_id must be 1 to 64 chars", ref)
    return client_id


def check_body(body: str, ref: str | None = None) -> str:
    """The body as stored: trimmed, 1..4096 chars."""
    trimmed = body.strip()
    if len(trimmed) > MAX_BODY_CHARS:
        raise FrameError(ErrorCode.TOO_LARGE, f"body is over {MAX_BODY_CHARS} chars", ref)
    if not trimmed:
        raise FrameError(ErrorCode.BAD_REQUEST, "body is empty", ref)
    return trimmed


def check_limit(limit: int | None, ref: str | None = None) -> int:
    if limit is None:
        return DEFAULT_HISTORY_LIMIT
    if limit < 1 or limit > MAX_HISTORY_LIMIT:
        raise FrameError(ErrorCode.BAD_REQUEST, "limit must be between 1 and 100", ref)
    return limit


def parse_client_frame(data: str | bytes) -> ClientFrame:
    """Parse one text frame; raise FrameError with the code PROTOCOL.md names."""
    obj = decode_json_object(data)
    ref = _ref_of(obj)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise FrameError(ErrorCode.BAD_REQUEST, "missing string field 'type'", ref)
    f = _Fields(obj, ref)
    if kind == "send":
        room = f.text("room")
        client_id = check_client_id(f.text("client_id"), ref)
        return Send(room, client_id, check_body(f.text("body"), ref), ref)
    if kind == "subscribe":
        return Subscribe(f.text("room"), f.integer("since", minimum=-1), ref)
    if kind == "unsubscribe":
        return Unsubscribe(f.text("room"), ref)
    if kind == "history":
        room = f.text("room")
        before = f.integer("before", minimum=0)
        limit = check_limit(f.integer("limit", minimum=-(2**63)), ref)
        return History(room, before, limit, ref)
    if kind == "typing":
        return Typing(f.text("room"), ref)
    if kind == "read":
        return Read(f.text("room"), f.required_integer("seq", minimum=0), ref)
    if kind == "ping":
        return Ping(ref)
    raise FrameError(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {kind[:64]!r}", ref)
