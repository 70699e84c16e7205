"""Client frames parsed from literal text, and the server frames' timestamps.

Pure: no socket, no event loop. Each error path checks the ErrorCode that
PROTOCOL.md names and that the client's `ref` comes back with it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.protocol.codes import ErrorCode
from parley.protocol.errors import FrameError, ProtocolError
from parley.protocol.frames import (
    DEFAULT_HISTORY_LIMIT,
    MAX_BODY_CHARS,
    ClientFrame,
    History,
    Ping,
    Read,
    Send,
    Subscribe,
    Typing,
    Unsubscribe,
    parse_client_frame,
)
from parley.protocol.messages import ChatMessage, format_ts


def parse(**fields: Any) -> ClientFrame:
    return parse_client_frame(orjson.dumps(fields))


def refused(data: str | bytes) -> FrameError:
    with pytest.raises(FrameError) as caught:
        parse_client_frame(data)
    assert isinstance(caught.value, ProtocolError)
    return caught.value


def refused_fields(**fields: Any) -> FrameError:
    return refused(orjson.dumps(fields))


# Every frame type -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "frame"),
    [
        ({"type": "subscribe", "room": "general"}, Subscribe("general", None, None)),
        ({"type": "subscribe", "room": "g", "since": 41, "ref": "r1"}, Subscribe("g", 41, "r1")),
        ({"type": "subscribe", "room": "g", "since": -1}, Subscribe("g", -1, None)),
        ({"type": "unsubscribe", "room": "g", "ref": "u"}, Unsubscribe("g", "u")),
        (
            {"type": "send", "room": "dm:a:b", "client_id": "c-1", "body": "hi", "ref": "s"},
            Send("dm:a:b", "c-1", "hi", "s"),
        ),
        ({"type": "history", "room": "g"}, History("g", None, DEFAULT_HISTORY_LIMIT, None)),
        ({"type": "history", "room": "g", "before": 0, "limit": 1}, History("g", 0, 1, None)),
        ({"type": "history", "room": "g", "before": 99, "limit": 100}, History("g", 99, 100, None)),
        ({"type": "typing", "room": "g"}, Typing("g", None)),
        ({"type": "read", "room": "g", "seq": 0, "ref": "x"}, Read("g", 0, "x")),
        ({"type": "read", "room": "g", "seq": 2**53}, Read("g", 2**53, None)),
        ({"type": "ping"}, Ping(None)),
        ({"type": "ping", "ref": "p" * 64}, Ping("p" * 64)),
        # Unknown fields are ignored; null means absent.
        ({"type": "ping", "extra": [1, 2]}, Ping(None)),
        (
            {"type": "subscribe", "room": "g", "since": None, "ref": None},
            Subscribe("g", None, None),
        ),
    ],
)
def test_every_frame_type_parses(fields: dict[str, Any], frame: ClientFrame) -> None:
    assert parse(**fields) == frame
    assert parse_client_frame(orjson.dumps(fields).decode()) == frame  # str as well as bytes


# Errors, with their code and the client's ref ---------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "subscribe"},
        {"type": "subscribe", "room": 5},
        {"type": "subscribe", "room": "g", "since": "3"},
        {"type": "subscribe", "room": "g", "since": 1.5},
        {"type": "subscribe", "room": "g", "since": -2},
        {"type": "subscribe", "room": "g", "since": True},
        {"type": "unsubscribe"},
        {"type": "unsubscribe", "room": ["g"]},
        {"type": "send", "client_id": "c", "body": "hi"},
        {"type": "send", "room": "g", "body": "hi"},
        {"type": "send", "room": "g", "client_id": "c"},
        {"type": "send", "room": "g", "client_id": "", "body": "hi"},
        {"type": "send", "room": "g", "client_id": "c" * 65, "body": "hi"},
        {"type": "send", "room": "g", "client_id": 7, "body": "hi"},
        {"type": "send", "room": "g", "client_id": "c", "body": 42},
        {"type": "send", "room": "g", "client_id": "c", "body": ""},
        {"type": "send", "room": "g", "client_id": "c", "body": " \n\t "},
        {"type": "history"},
        {"type": "history", "room": "g", "before": -1},
        {"type": "history", "room": "g", "before": "10"},
        {"type": "history", "room": "g", "before": False},
        {"type": "history", "room": "g", "limit": 0},
        {"type": "history", "room": "g", "limit": 101},
        {"type": "history", "room": "g", "limit": -5},
        {"type": "history", "room": "g", "limit": 2.0},
        {"type": "history", "room": "g", "limit": True},
        {"type": "typing"},
        {"type": "read", "room": "g"},
        {"type": "read", "room": "g", "seq": -1},
        {"type": "read", "room": "g", "seq": "1"},
        {"type": "read", "room": "g", "seq": True},
        {"type": "read", "room": "g", "seq": False},
        {"type": 3},
        {"type": None},
        {"room": "g"},
    ],
)
def test_bad_fields_are_bad_request_with_the_ref(fields: dict[str, Any]) -> None:
    error = refused_fields(**fields, ref="my-ref")
    assert error.code is ErrorCode.BAD_REQUEST
    assert error.ref == "my-ref"
    assert error.message and str(error) == error.message


def test_without_a_ref_the_error_has_none() -> None:
    error = refused_fields(type="read", room="g")
    assert (error.code, error.ref) == (ErrorCode.BAD_REQUEST, None)
    assert "seq" in error.message


def test_bool_is_not_an_integer() -> None:
    for name, frame in (
        ("since", {"type": "subscribe", "room": "g"}),
        ("seq", {"type": "read", "room": "g"}),
        ("before", {"type": "history", "room": "g"}),
        ("limit", {"type": "history", "room": "g"}),
    ):
        error = refused_fields(**frame, **{name: True})
        assert error.code is ErrorCode.BAD_REQUEST
        assert name in error.message


def test_history_limit_bounds() -> None:
    for ok in (1, 2, 50, 99, 100):
        frame = parse(type="history", room="g", limit=ok)
        assert isinstance(frame, History) and frame.limit == ok
    for bad in (0, -1, 101, 2**63):
        error = refused_fields(type="history", room="g", limit=bad, ref="L")
        assert (error.code, error.ref) == (ErrorCode.BAD_REQUEST, "L")


def test_body_is_trimmed() -> None:
    frame = parse(type="send", room="g", client_id="c", body="  \n hello world \t\n")
    assert isinstance(frame, Send) and frame.body == "hello world"
    inner = parse(type="send", room="g", client_id="c", body=" a  \n  b ")
    assert isinstance(inner, Send) and inner.body == "a  \n  b"  # only the ends


def test_body_size_boundary_is_counted_in_chars_after_trimming() -> None:
    exact = parse(type="send", room="g", client_id="c", body="é" * MAX_BODY_CHARS)
    assert isinstance(exact, Send) and len(exact.body) == 4096 == MAX_BODY_CHARS
    padded = parse(type="send", room="g", client_id="c", body="  " + "x" * 4096 + "\n\n")
    assert isinstance(padded, Send) and len(padded.body) == 4096
    emoji = parse(type="send", room="g", client_id="c", body="👋" * 4096)  # 16 KiB of UTF-8
    assert isinstance(emoji, Send) and len(emoji.body) == 4096

    error = refused_fields(type="send", room="g", client_id="c", body="x" * 4097, ref="big")
    assert (error.code, error.ref) == (ErrorCode.TOO_LARGE, "big")
    assert refused_fields(type="send", room="g", client_id="c", body="é" * 4097).code is (
        ErrorCode.TOO_LARGE
    )


def test_client_id_length_boundary() -> None:
    frame = parse(type="send", room="g", client_id="k" * 64, body="b")
    assert isinstance(frame, Send) and frame.client_id == "k" * 64
    assert refused_fields(type="send", room="g", client_id="k" * 65, body="b").code is (
        ErrorCode.BAD_REQUEST
    )


def test_unknown_type_is_unknown_type_with_the_ref() -> None:
    error = refused_fields(type="dance", room="g", ref="d1")
    assert (error.code, error.ref) == (ErrorCode.UNKNOWN_TYPE, "d1")
    assert "dance" in error.message
    long = refused_fields(type="z" * 10_000)
    assert long.code is ErrorCode.UNKNOWN_TYPE
    assert len(long.message) < 200  # the echo of the client's type is cut
    assert refused_fields(type="").code is ErrorCode.UNKNOWN_TYPE
    assert refused_fields(type="Ping").code is ErrorCode.UNKNOWN_TYPE


@pytest.mark.parametrize("ref", [5, ["r"], {"r": 1}, True, "r" * 65])
def test_a_bad_ref_is_bad_request_without_echoing_it(ref: object) -> None:
    error = refused(orjson.dumps({"type": "ping", "ref": ref}))
    assert (error.code, error.ref) == (ErrorCode.BAD_REQUEST, None)


@pytest.mark.parametrize(
    "data",
    [b"[]", b'"ping"', b"42", b"null", b"true", b'[{"type": "ping"}]', "[1, 2]"],
)
def test_not_an_object_is_bad_request(data: str | bytes) -> None:
    error = refused(data)
    assert (error.code, error.ref) == (ErrorCode.BAD_REQUEST, None)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"{",
        b'{"type": "ping",}',
        b"{'type': 'ping'}",
        b'{"type": "ping"} {"type": "ping"}',
        b"\xff\xfe{}",
        b'{"type": "ping", "x": NaN}',
        '{"type": "ping", "ref": "\ud800"}',
    ],
)
def test_invalid_json_is_bad_request(data: str | bytes) -> None:
    error = refused(data)
    assert (error.code, error.ref) == (ErrorCode.BAD_REQUEST, None)


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deeply_nested_json_is_bad_request_not_a_crash(opener: bytes) -> None:
    depth = 100_000
    closer = b"]" if opener == b"[" else b"}"
    value = opener * depth + (b"" if opener == b"[" else b"1") + closer * depth
    error = refused(b'{"type": "ping", "ref": "deep", "x": ' + value + b"}")
    assert (error.code, error.ref) == (ErrorCode.BAD_REQUEST, None)


def test_moderately_nested_json_is_only_ignored() -> None:
    nested = b'{"type": "ping", "x": ' + b"[" * 500 + b"]" * 500 + b"}"
    assert parse_client_frame(nested) == Ping(None)


# Timestamps of server frames ---------------------------------------------------------


@pytest.mark.parametrize(
    ("ts_ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (999, "1970-01-01T00:00:00.999Z"),
        (1_764_136_800_123, "2025-11-26T06:00:00.123Z"),
        (1_700_000_000_000, "2023-11-14T22:13:20.000Z"),
        (2_147_483_648_000, "2038-01-19T03:14:08.000Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
    ],
)
def test_format_ts_is_rfc3339_utc_with_milliseconds(ts_ms: int, text: str) -> None:
    assert format_ts(ts_ms) == text


@settings(max_examples=200, database=None)
@given(st.integers(min_value=0, max_value=253_402_300_799_999))
def test_format_ts_round_trips(ts_ms: int) -> None:
    text = format_ts(ts_ms)
    assert len(text) == 24 and text.endswith("Z") and text[10] == "T"
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.utcoffset() == dt.timedelta(0)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert (parsed - epoch) // dt.timedelta(milliseconds=1) == ts_ms


def test_message_frame_is_encoded_once_and_shows_the_ts() -> None:
    m = ChatMessage("g", "0-7", 7, "alice", "hi", 1_764_136_800_123, "c1")
    frame = m.frame_json()
    assert m.frame_json() is frame
    assert orjson.loads(frame) == {
        "type": "message",
        "room": "g",
        "id": "0-7",
        "seq": 7,
        "sender": "alice",
        "body": "hi",
        "ts": "2025-11-26T06:00:00.123Z",
        "client_id": "c1",
    }
