"""What PROTOCOL.md says a client frame means, written independently of the parser.

The fuzz tests compare the server (and `parse_client_frame`) against this
model. It is deliberately a second reading of PROTOCOL.md's tables, not a copy
of `frames.py`: where a frame has several faults the model lists every code
they could earn (PROTOCOL.md does not say which fault is reported first), and
the parser must answer one of them.

Decoding the JSON text itself is left to orjson, the codec the server uses:
"is this text JSON" is not something the protocol defines, and the model only
needs the decoded value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import strategies as st

from parley.protocol.codes import ErrorCode
from parley.protocol.frames import (
    ClientFrame,
    History,
    Ping,
    Read,
    Send,
    Subscribe,
    Typing,
    Unsubscribe,
)

FRAME_TYPES = ("subscribe", "unsubscribe", "send", "history", "typing", "read", "ping")
# The codes a malformed frame may earn before any state is looked at (the
# parser's share of PROTOCOL.md's Errors table).
PARSE_CODES = frozenset({ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE, ErrorCode.TOO_LARGE})
MAX_FRAME_BYTES = 64 * 1024
MAX_BODY = 4096
MAX_ID = 64
INT64_MAX = 2**63 - 1
# The fuzz tests open connection after connection on purpose: the per-IP
# handshake limit (PARLEY_HANDSHAKE_RATE, tested in tests/e2e) is not what
# they are about.
NO_HANDSHAKE_LIMIT = {"PARLEY_HANDSHAKE_RATE": "100000", "PARLEY_HANDSHAKE_BURST": "100000"}
# An error message never echoes the client's input in full.
MAX_ERROR_MESSAGE = 200
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Expect:
    """The model's verdict on one decoded frame."""

    frame: ClientFrame | None = None  # the parsed frame, when it is valid
    codes: frozenset[ErrorCode] = frozenset()  # the codes one of which must answer it
    ref: str | None = None  # the ref an error must carry

    @property
    def valid(self) -> bool:
        return self.frame is not None


def is_name(value: str) -> bool:
    return _NAME.fullmatch(value) is not None


def is_member_room(room: str, user: str, group_rooms: frozenset[str]) -> bool:
    """PROTOCOL.md's names table: a DM room `dm:<a>:<b>` (a < b) has exactly a and b."""
    if room in group_rooms:
        return True
    if not room.startswith("dm:"):
        return False
    parts = room[3:].split(":")
    if len(parts) != 2 or not all(is_name(p) for p in parts):
        return False
    a, b = parts
    return a.encode() < b.encode() and user in (a, b)


class _Faults:
    """Collects every fault of one frame, field by field."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.codes: set[ErrorCode] = set()

    def text(self, name: str) -> str | None:
        value = self.obj.get(name)
        if not isinstance(value, str):  # missing (null counts as missing) or another type
            self.codes.add(ErrorCode.BAD_REQUEST)
            return None
        return value

    def integer(self, name: str, minimum: int, *, required: bool = False) -> int | None:
        value = self.obj.get(name)
        if value is None:
            if required:
                self.codes.add(ErrorCode.BAD_REQUEST)
            return None
        if type(value) is not int or not minimum <= value <= INT64_MAX:
            self.codes.add(ErrorCode.BAD_REQUEST)
            return None
        return value


def expect(obj: Any) -> Expect:
    """The model's verdict on a decoded JSON value sent as a text frame."""
    if not isinstance(obj, dict):
        return Expect(codes=frozenset({ErrorCode.BAD_REQUEST}))
    ref = obj.get("ref")
    if ref is not None and not (isinstance(ref, str) and len(ref) <= MAX_ID):
        # A bad ref cannot be echoed: the error carries none.
        return Expect(codes=frozenset({ErrorCode.BAD_REQUEST}))
    kind = obj.get("type")
    if not isinstance(kind, str):
        return Expect(codes=frozenset({ErrorCode.BAD_REQUEST}), ref=ref)
    if kind not in FRAME_TYPES:
        return Expect(codes=frozenset({ErrorCode.UNKNOWN_TYPE}), ref=ref)
    f = _Faults(obj)
    frame: ClientFrame | None = None
    if kind == "ping":
        frame = Ping(ref)
    elif kind == "subscribe":
        room, since = f.text("room"), f.integer("since", -1)
        frame = None if room is None else Subscribe(room, since, ref)
    elif kind == "unsubscribe":
        room = f.text("room")
        frame = None if room is None else Unsubscribe(room, ref)
    elif kind == "typing":
        room = f.text("room")
        frame = None if room is None else Typing(room, ref)
    elif kind == "read":
        room, seq = f.text("room"), f.integer("seq", 0, required=True)
        frame = None if room is None or seq is None else Read(room, seq, ref)
    elif kind == "history":
        room, before = f.text("room"), f.integer("before", 0)
        limit = f.integer("limit", -(2**63))
        if limit is not None and not 1 <= limit <= 100:
            f.codes.add(ErrorCode.BAD_REQUEST)
        frame = None if room is None else History(room, before, limit or 50, ref)
    else:
        room, client_id, body = f.text("room"), f.text("client_id"), f.text("body")
        if client_id is not None and not 1 <= len(client_id) <= MAX_ID:
            f.codes.add(ErrorCode.BAD_REQUEST)
        if body is not None:
            trimmed = body.strip()
            if len(trimmed) > MAX_BODY:
                f.codes.add(ErrorCode.TOO_LARGE)
            elif not trimmed:
                f.codes.add(ErrorCode.BAD_REQUEST)
            body = trimmed
        if room is not None and client_id is not None and body is not None:
            frame = Send(room, client_id, body, ref)
    if f.codes:
        return Expect(codes=frozenset(f.codes), ref=ref)
    assert frame is not None
    return Expect(frame=frame)


def expect_text(data: str | bytes) -> Expect:
    """The verdict on a text frame's payload: not JSON is `bad_request` with no ref."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Expect(codes=frozenset({ErrorCode.BAD_REQUEST}))
    return expect(obj)


# Strategies ---------------------------------------------------------------------------

# Integers orjson round-trips exactly, with the interesting edges drawn often.
EDGE_INTS = (-(2**63), -2, -1, 0, 1, 2, 49, 50, 51, 99, 100, 101, INT64_MAX, 2**63, 2**64 - 1)
ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-(2**63), 2**64 - 1))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

ROOMS = ("fz", "secret", "nosuch", "dm:alice:bob", "dm:bob:alice", "dm:alice:alice", "", "fz ")
rooms = st.one_of(st.sampled_from(ROOMS), st.text(max_size=70), json_values)
seq_like = st.one_of(ints, st.none(), json_values, st.sampled_from(["1", "", "0x10", "1e3"]))
whitespace = st.text(alphabet=" \t\n\r\x0b\x0c\x1c\x1d\x85\xa0\u2028\u3000", max_size=4)
bodies = st.one_of(
    st.text(max_size=40),
    whitespace,
    st.builds(
        lambda pad, n, c: pad + c * n + pad,
        whitespace,
        st.integers(4090, 4100),
        st.sampled_from("bé👋"),
    ),
    json_values,
)
client_ids = st.one_of(
    st.text(max_size=70), st.integers(60, 70).map(lambda n: "c" * n), json_values
)
refs = st.one_of(
    st.none(), st.text(max_size=70), st.integers(60, 70).map(lambda n: "r" * n), json_values
)
types = st.one_of(st.sampled_from(FRAME_TYPES), st.text(max_size=12), json_values)

# Frame-like objects: any subset of the protocol's fields, each valid or not,
# and unknown fields on top.
frame_objects: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"type": types},
    optional={
        "room": rooms,
        "client_id": client_ids,
        "body": bodies,
        "since": seq_like,
        "before": seq_like,
        "limit": seq_like,
        "seq": seq_like,
        "ref": refs,
        "extra": json_values,
    },
)


def _valid_frame(kind: str, room: str, n: int, ref: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"type": kind}
    if kind != "ping":
        fields["room"] = room
    if kind == "send":
        fields.update(client_id=f"c{n}", body=f"body {n}")
    elif kind == "read":
        fields["seq"] = n
    elif kind == "history":
        fields.update(before=n, limit=1 + n % 100)
    elif kind == "subscribe":
        fields["since"] = n - 1
    if ref is not None:
        fields["ref"] = ref
    return fields


valid_frames: st.SearchStrategy[dict[str, Any]] = st.builds(
    _valid_frame,
    st.sampled_from(FRAME_TYPES),
    st.sampled_from(ROOMS[:4]),
    st.integers(0, 10_000),
    st.one_of(st.none(), st.text(min_size=1, max_size=MAX_ID)),
)


@st.composite
def mutated_frames(draw: st.DrawFn) -> dict[str, Any]:
    """A valid frame with some fields replaced, removed or added: mostly near-misses."""
    obj = dict(draw(valid_frames))
    changes = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "type": types,
                "room": rooms,
                "client_id": client_ids,
                "body": bodies,
                "since": seq_like,
                "before": seq_like,
                "limit": seq_like,
                "seq": seq_like,
                "ref": refs,
                "extra": json_values,
            },
        )
    )
    obj.update(changes)
    for key in draw(st.sets(st.sampled_from(sorted(obj)), max_size=2)):
        del obj[key]
    return obj


def nested(depth: int, leaf: str = "1") -> str:
    """`depth` levels of arrays and objects around a leaf, as JSON text."""
    opens, closes = [], []
    for i in range(depth):
        if i % 2:
            opens.append("[")
            closes.append("]")
        else:
            opens.append('{"k":')
            closes.append("}")
    return "".join(opens) + leaf + "".join(reversed(closes))


# Byte sequences that are not UTF-8: a lone continuation byte, a truncated
# two-byte sequence, an overlong '/', an encoded surrogate, a code point over
# U+10FFFF, and bytes that never occur in UTF-8.
INVALID_UTF8 = (
    b"\x80",
    b"\xc3",
    b"\xc3\x28",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xff",
    b"\xfe\xff",
)
