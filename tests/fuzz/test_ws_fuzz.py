"""Hypothesis against a live `parley serve`: random, truncated, huge, deeply nested,
wrongly typed, binary and non-UTF-8 frames on a real socket.

Each input must get PROTOCOL.md's answer (tests/fuzz/model.py, checked by
tests/fuzz/live.py): the frame's reply, or one `error` with the documented
code and the client's ref, the connection staying open; a frame over 64 KiB
closes it with 1009, a text frame that is not UTF-8 with 1007 (RFC 6455
§8.1; PROTOCOL.md is silent). After the run the node is alive, answers
/healthz, and logged no error (a frame the gateway did not expect would show
as `frame from ... failed` with a traceback).

Raw protocol violations (reserved opcodes, bad fragmentation, bad close
frames) are sent byte by byte on a plain TCP socket.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import own_cluster
from tests.fuzz.live import BadUtf8, Binary, Payload, Prober, Text, healthz
from tests.fuzz.model import (
    INVALID_UTF8,
    MAX_FRAME_BYTES,
    NO_HANDSHAKE_LIMIT,
    frame_objects,
    json_values,
    mutated_frames,
    nested,
    valid_frames,
)
from tests.harness import Api, ServerProcess
from tests.raw_ws import CLOSE, CONT, TEXT, WS_PING, WS_PONG, RawSocket, ws_frame

LIVE = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def padded(size: int) -> str:
    """A ping of exactly `size` bytes of UTF-8."""
    frame = {"type": "ping", "ref": "pad", "pad": ""}
    frame["pad"] = "p" * (size - len(orjson.dumps(frame)))
    return dumps(frame)


@st.composite
def truncated(draw: st.DrawFn) -> str:
    text = dumps(draw(st.one_of(valid_frames, mutated_frames())))
    return text[: draw(st.integers(0, len(text) - 1))]


@st.composite
def non_utf8(draw: st.DrawFn) -> bytes:
    data = orjson.dumps(draw(valid_frames))
    at = draw(st.integers(0, len(data)))
    return data[:at] + draw(st.sampled_from(INVALID_UTF8)) + data[at:]


live_inputs: st.SearchStrategy[Payload] = st.one_of(
    st.builds(Text, st.one_of(valid_frames, mutated_frames(), frame_objects).map(dumps)),
    st.builds(Text, json_values.map(dumps)),
    st.builds(Text, st.text(max_size=80)),
    st.builds(Text, truncated()),
    st.builds(
        Text, st.integers(1, 1500).map(lambda d: f'{{"type":"ping","ref":"deep","x":{nested(d)}}}')
    ),
    st.builds(
        Text,
        st.sampled_from([MAX_FRAME_BYTES - 1, MAX_FRAME_BYTES, MAX_FRAME_BYTES + 1]).map(padded),
    ),
    st.builds(Text, st.integers(MAX_FRAME_BYTES - 2000, MAX_FRAME_BYTES + 2000).map(padded)),
    st.builds(Binary, st.binary(max_size=64)),
    st.builds(Binary, st.sampled_from([b"", orjson.dumps({"type": "ping", "ref": "b"})])),
    st.builds(Binary, st.integers(MAX_FRAME_BYTES, MAX_FRAME_BYTES + 1).map(lambda n: b"\x00" * n)),
    st.builds(BadUtf8, non_utf8()),
)


@pytest.fixture
async def prober(tmp_path: Path) -> AsyncIterator[Prober]:
    """alice, a member of `fz` (with a few messages), not of bob's `secret`."""
    async with own_cluster(
        "embedded", tmp_path, name="fuzz", settings=NO_HANDSHAKE_LIMIT
    ) as cluster:
        node = cluster.nodes[0]
        await cluster.api("alice").create_room("fz", [])
        await cluster.api("bob").create_room("secret", ["carol"])
        for i in range(5):
            status, _ = await cluster.api("alice").call(
                "POST", "/api/rooms/fz/messages", {"client_id": f"seed{i}", "body": f"seed {i}"}
            )
            assert status == 201
        p = Prober(node, "alice", frozenset({"fz"}))
        try:
            yield p
        finally:
            await p.close()
        print(f"{p.inputs} inputs on {p.connections} connections")
        await assert_healthy(node, cluster.api("alice"))


async def assert_healthy(node: ServerProcess, api: Api) -> None:
    assert node.proc is not None and node.proc.returncode is None, "the node died"
    assert await healthz(node) == 200
    status, rooms = await api.call("GET", "/api/rooms")
    assert status == 200, rooms
    # fz, and the DM rooms alice sent to; never bob's room
    assert {r["id"] for r in rooms} - {"fz"} <= {"dm:alice:bob"}, rooms
    log = node.output()
    bad = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    assert bad == [], "\n".join(bad[:20])


@LIVE
@given(payload=live_inputs)
async def test_any_input_gets_the_documented_answer(prober: Prober, payload: Payload) -> None:
    await prober.probe(payload)


@LIVE
@given(payload=st.builds(Text, st.one_of(valid_frames, mutated_frames()).map(dumps)))
async def test_near_miss_frames_get_the_documented_answer(prober: Prober, payload: Payload) -> None:
    """Valid frames and frames one or two fields away from valid: the model's busiest region."""
    await prober.probe(payload)


async def test_the_fuzzed_connection_still_works_and_nothing_leaked(prober: Prober) -> None:
    """After bad input of every kind on one connection: it still sends, receives and pages."""
    inputs: list[Payload] = [
        Text("not json"),
        Binary(b"\x00\x01"),
        Text(dumps({"type": "send", "room": "fz", "client_id": "big", "body": "x" * 5000})),
        Text('{"type": "ping", "x": ' + nested(2000) + "}"),
        Text(dumps({"type": "subscribe", "room": "secret"})),
        Text(dumps({"type": "ping", "ref": "ok"})),
        Text(dumps({"type": "send", "room": "fz", "client_id": "after", "body": " after "})),
        Text(dumps({"type": "history", "room": "fz", "limit": 100, "ref": "h"})),
    ]
    for payload in inputs:
        await prober.probe(payload)
    # every message alice ever got back for fz is a real one of fz
    page = next(f for f in reversed(prober.frames) if f.get("ref") == "h")
    assert [m["body"] for m in page["messages"]] == [f"seed {i}" for i in range(5)] + ["after"]
    # nothing of the secret room was ever sent to alice
    assert "secret" not in {f.get("room") for f in prober.frames if f.get("type") != "error"}


# Raw WebSocket protocol violations ---------------------------------------------------------


PING = b'{"type":"ping","ref":"p"}'

VIOLATIONS: dict[str, tuple[list[bytes], int]] = {
    "reserved_data_opcode": ([ws_frame(0x3, b"x")], 1002),
    "reserved_control_opcode": ([ws_frame(0xB, b"x")], 1002),
    "rsv1_without_extension": ([ws_frame(TEXT, PING, rsv=4)], 1002),
    "rsv3": ([ws_frame(TEXT, PING, rsv=1)], 1002),
    "control_frame_over_125_bytes": ([ws_frame(WS_PING, b"x" * 126)], 1002),
    "fragmented_control_frame": ([ws_frame(WS_PING, b"x", fin=False), ws_frame(CONT, b"y")], 1002),
    "continuation_without_start": ([ws_frame(CONT, PING)], 1002),
    "new_message_inside_a_fragmented_one": (
        [ws_frame(TEXT, b'{"type"', fin=False), ws_frame(TEXT, PING)],
        1002,
    ),
    "close_with_invalid_code_999": ([ws_frame(CLOSE, struct.pack("!H", 999))], 1002),
    "close_with_reserved_code_1005": ([ws_frame(CLOSE, struct.pack("!H", 1005))], 1002),
    "close_with_one_byte": ([ws_frame(CLOSE, b"\x03")], 1002),
    "close_reason_not_utf8": ([ws_frame(CLOSE, struct.pack("!H", 1000) + b"\xff")], 1007),
    "text_not_utf8": ([ws_frame(TEXT, b'{"type":"ping","ref":"\xff"}')], 1007),
    "text_not_utf8_across_fragments": (
        [ws_frame(TEXT, b'{"type":"ping","ref":"\xc3', fin=False), ws_frame(CONT, b'("}')],
        1007,
    ),
    "fragments_adding_up_to_over_64_kib": (
        [
            ws_frame(TEXT, b'{"type":"ping","x":"' + b"a" * 40_000, fin=False),
            ws_frame(CONT, b"a" * 40_000 + b'"}'),
        ],
        1009,
    ),
    "length_field_of_2_to_the_62": ([ws_frame(TEXT, b"", length=2**62)], 1009),
}

# Legal but unusual: the connection must go on and answer the ping that follows.
LEGAL: dict[str, list[bytes]] = {
    "utf8_char_split_across_fragments": [
        ws_frame(TEXT, b'{"type":"ping","ref":"\xc3', fin=False),
        ws_frame(CONT, b'\xa9"}'),
    ],
    "one_byte_fragments": [ws_frame(TEXT, PING[:1], fin=False)]
    + [ws_frame(CONT, PING[i : i + 1], fin=False) for i in range(1, len(PING) - 1)]
    + [ws_frame(CONT, PING[-1:])],
    "ping_between_fragments": [
        ws_frame(TEXT, PING[:5], fin=False),
        ws_frame(WS_PING, b"hi"),
        ws_frame(CONT, PING[5:]),
    ],
    "unsolicited_pong": [ws_frame(WS_PONG, b"hi")],
    "empty_fragments": [
        ws_frame(TEXT, b"", fin=False),
        ws_frame(CONT, b"", fin=False),
        ws_frame(CONT, PING),
    ],
}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    async with own_cluster(
        "embedded", tmp_path, name="raw", settings=NO_HANDSHAKE_LIMIT
    ) as cluster:
        yield cluster.nodes[0]
        await assert_healthy(cluster.nodes[0], cluster.api("alice"))


async def test_websocket_protocol_violations_close_with_the_rfc_code(node: ServerProcess) -> None:
    for name, (frames, code) in VIOLATIONS.items():
        sock = await RawSocket.open(node, "alice")
        try:
            # One write: were the node to close between two of ours, the
            # second would fail and asyncio drop the socket unread, close
            # frame included.
            sock.writer.write(b"".join(frames) + ws_frame(TEXT, b'{"type":"ping","ref":"after"}'))
            got: list[tuple[int, bytes]] = []
            while True:
                opcode, data = await sock.read()
                if opcode == CLOSE:
                    assert len(data) >= 2, (name, data)
                    assert struct.unpack("!H", data[:2])[0] == code, (name, data)
                    break
                got.append((opcode, data))
            # nothing of the violating input was answered as a frame
            assert all(b'"ref":"after"' not in d for _, d in got), (name, got)
        finally:
            await sock.close()


async def test_unusual_but_legal_framing_is_accepted(node: ServerProcess) -> None:
    for name, frames in LEGAL.items():
        sock = await RawSocket.open(node, "alice")
        try:
            for f in frames:
                sock.writer.write(f)
            sock.writer.write(ws_frame(TEXT, b'{"type":"ping","ref":"after"}'))
            answers: list[bytes] = []
            while True:
                opcode, data = await sock.read()
                assert opcode != CLOSE, (name, data)
                if opcode == TEXT:
                    answers.append(data)
                    if orjson.loads(data).get("ref") == "after":
                        break
            pongs = [orjson.loads(a) for a in answers]
            assert pongs[-1] == {"type": "pong", "ref": "after"}, (name, pongs)
            assert all(p["type"] == "pong" for p in pongs), (name, pongs)
        finally:
            await sock.close()
