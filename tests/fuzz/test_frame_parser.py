"""Property-based fuzzing of the frame parser: any input is a frame or a documented error.

Pure, like tests/protocol: no socket. Every input given to
`parse_client_frame` must give either a typed frame or a FrameError whose
code is `bad_request`, `unknown_type` or `too_large` (the parser's share of
PROTOCOL.md's Errors table), never any other exception; and where the input
is JSON, the outcome must be the one tests/fuzz/model.py derives from
PROTOCOL.md.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from parley.protocol.codes import ErrorCode
from parley.protocol.errors import FrameError
from parley.protocol.frames import ClientFrame, parse_client_frame
from tests.fuzz.model import (
    INVALID_UTF8,
    MAX_ERROR_MESSAGE,
    PARSE_CODES,
    Expect,
    expect,
    frame_objects,
    json_values,
    mutated_frames,
    nested,
    valid_frames,
)

FUZZ = settings(max_examples=400, deadline=None, database=None)
FEW = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def outcome(data: str | bytes) -> ClientFrame | FrameError:
    """The parser's answer; any exception but FrameError fails the test right here."""
    try:
        return parse_client_frame(data)
    except FrameError as exc:
        assert exc.code in PARSE_CODES, exc.code
        assert exc.message and len(exc.message) <= MAX_ERROR_MESSAGE, exc.message
        assert exc.ref is None or (isinstance(exc.ref, str) and len(exc.ref) <= 64)
        return exc


def assert_matches(got: ClientFrame | FrameError, want: Expect) -> None:
    if want.valid:
        assert got == want.frame, (got, want)
        return
    assert isinstance(got, FrameError), (got, want)
    assert got.code in want.codes, (got.code, got.message, want)
    assert got.ref == want.ref, (got.ref, want)


def assert_bad_request(got: ClientFrame | FrameError) -> None:
    assert isinstance(got, FrameError), got
    assert (got.code, got.ref) == (ErrorCode.BAD_REQUEST, None), (got.code, got.ref)


# Anything at all ----------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=400))
@example(b"")
@example(b"\x00")
@example(b'{"type":"ping"}\x00')
@example(b"\xef\xbb\xbf" + b'{"type":"ping"}')  # a UTF-8 BOM is not JSON
def test_any_bytes_are_a_frame_or_a_documented_error(data: bytes) -> None:
    got = outcome(data)
    if isinstance(got, FrameError) and got.code is not ErrorCode.BAD_REQUEST:
        # unknown_type and too_large need a well-formed object with a type
        assert isinstance(orjson.loads(data), dict)


@FUZZ
@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=200))
@example("\ud800")
@example('{"type": "ping", "ref": "\udfff"}')
def test_any_text_including_lone_surrogates(text: str) -> None:
    got = outcome(text)
    try:
        text.encode()
    except UnicodeEncodeError:
        # not Unicode scalar values: it cannot be UTF-8 on the wire, nor JSON
        assert_bad_request(got)


# JSON: the model decides ---------------------------------------------------------------


@FUZZ
@given(json_values)
def test_any_json_value_matches_the_model(value: Any) -> None:
    data = orjson.dumps(value)
    assert_matches(outcome(data), expect(value))


@settings(max_examples=600, deadline=None, database=None)
@given(st.one_of(frame_objects, mutated_frames()))
def test_frame_like_objects_match_the_model(obj: dict[str, Any]) -> None:
    data = orjson.dumps(obj)
    want = expect(obj)
    got = outcome(data)
    # (--hypothesis-show-statistics shows how the examples spread over the outcomes)
    event(type(got).__name__ if want.valid else "/".join(sorted(want.codes)))
    assert_matches(got, want)
    # the server hands the parser text (aiohttp decodes it); the bytes give the same answer
    again = outcome(data.decode())
    if isinstance(got, FrameError):
        assert isinstance(again, FrameError)
        assert (again.code, again.ref, again.message) == (got.code, got.ref, got.message)
    else:
        assert again == got


@FUZZ
@given(valid_frames)
def test_valid_frames_parse(obj: dict[str, Any]) -> None:
    want = expect(obj)
    assert want.valid, want
    assert outcome(orjson.dumps(obj)) == want.frame


@FUZZ
@given(valid_frames, st.sampled_from(["", " ", "\n", "\t"]))
def test_insignificant_whitespace_changes_nothing(obj: dict[str, Any], ws: str) -> None:
    compact = orjson.dumps(obj).decode()
    spaced = ws + json.dumps(obj, separators=(ws + "," + ws, ws + ":" + ws)) + ws
    assert outcome(spaced) == outcome(compact) == expect(obj).frame


# Truncated, broken and invalid UTF-8 ------------------------------------------------------


@FUZZ
@given(st.one_of(valid_frames, frame_objects), st.data())
def test_truncated_frames_are_bad_request(obj: dict[str, Any], data: st.DataObject) -> None:
    encoded = orjson.dumps(obj)
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    # a strict prefix of an object's text is never JSON (the closing brace is missing)
    assert_bad_request(outcome(encoded[:cut]))


@FUZZ
@given(valid_frames, st.sampled_from(INVALID_UTF8), st.data())
def test_invalid_utf8_anywhere_is_bad_request(
    obj: dict[str, Any], bad: bytes, data: st.DataObject
) -> None:
    encoded = orjson.dumps(obj)
    at = data.draw(st.integers(0, len(encoded)), label="at")
    assert_bad_request(outcome(encoded[:at] + bad + encoded[at:]))


@FUZZ
@given(valid_frames, st.sampled_from(INVALID_UTF8))
def test_invalid_utf8_inside_a_string_is_bad_request(obj: dict[str, Any], bad: bytes) -> None:
    """Inside a string value, where a lenient decoder would pass it through."""
    obj = {**obj, "room": "fz", "x": "MARK"}
    encoded = orjson.dumps(obj).replace(b"MARK", b"a" + bad + b"b")
    assert_bad_request(outcome(encoded))


@FUZZ
@given(
    valid_frames,
    st.sampled_from(
        [b"}", b"]", b",", b":", b'"', b"\\", b"\x00", b"NaN", b"Infinity", b"-", b"1e999", b"//"]
    ),
    st.data(),
)
def test_stray_bytes_give_a_frame_or_a_documented_error(
    obj: dict[str, Any], junk: bytes, data: st.DataObject
) -> None:
    encoded = orjson.dumps(obj)
    at = data.draw(st.integers(0, len(encoded)), label="at")
    mangled = encoded[:at] + junk + encoded[at:]
    got = outcome(mangled)
    try:
        decoded = orjson.loads(mangled)
    except orjson.JSONDecodeError:
        assert_bad_request(got)
    else:
        assert_matches(got, expect(decoded))


# Deep, huge and wrongly typed ------------------------------------------------------------


@FEW
@given(st.integers(1, 3000), st.sampled_from(["extra", "room", "ref", "type", "body", "seq"]))
@example(100_000, "extra")
def test_deep_nesting_in_any_field(depth: int, field: str) -> None:
    text = '{"type": "send", "room": "fz", "client_id": "c", "body": "b", "seq": 1, "ref": "r"}'
    obj = orjson.loads(text)
    obj[field] = "MARK"
    data = orjson.dumps(obj).replace(b'"MARK"', nested(depth).encode())
    got = outcome(data)
    if depth > 1024:
        assert_bad_request(got)  # refused by the decoder, before any recursion of ours
    elif depth <= 500:
        assert_matches(got, expect(orjson.loads(data)))
    # in between, the decoder's own limit decides; outcome() checked the error is documented


@FEW
@given(
    st.sampled_from(["room", "client_id", "body", "ref", "type", "extra"]),
    st.integers(60_000, 70_000),
    st.sampled_from("aé👋 "),
)
def test_huge_values_in_any_field(field: str, size: int, char: str) -> None:
    obj: dict[str, Any] = {"type": "send", "room": "fz", "client_id": "c", "body": "b", "ref": "r"}
    obj[field] = char * size
    assert_matches(outcome(orjson.dumps(obj)), expect(obj))


@FUZZ
@given(
    st.sampled_from(["room", "client_id", "body", "since", "before", "limit", "seq"]), json_values
)
def test_every_field_with_any_json_value(field: str, value: Any) -> None:
    for kind in ("send", "subscribe", "history", "read", "typing", "unsubscribe"):
        obj: dict[str, Any] = {
            "type": kind,
            "room": "fz",
            "client_id": "c",
            "body": "b",
            "seq": 3,
            "ref": "r",
            field: value,
        }
        assert_matches(outcome(orjson.dumps(obj)), expect(obj))


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.tuples(st.sampled_from(["type", "room", "ref", "x"]), json_values), max_size=6))
def test_duplicate_keys_never_crash(pairs: list[tuple[str, Any]]) -> None:
    """JSON with repeated keys: whichever occurrence the decoder keeps, the answer is documented."""
    text = "{" + ",".join(f'"{k}":{orjson.dumps(v).decode()}' for k, v in pairs) + "}"
    got = outcome(text)
    assert_matches(got, expect(orjson.loads(text)))
