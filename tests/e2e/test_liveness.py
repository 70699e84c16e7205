"""Dead peers are found by the node's pings; live ones, and the pings they send, are answered.

One embedded node with PARLEY_PING_INTERVAL=0.5 s, so that a test sees several
periods in seconds; raw sockets, so that a test decides whether a ping is
answered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.harness import ServerProcess, base_env
from tests.raw_ws import TEXT, WS_PING, WS_PONG, RawSocket, ws_frame

PERIOD_S = 0.5


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    env = base_env("live", None, f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "data")
    env["PARLEY_PING_INTERVAL"] = str(PERIOD_S)
    server = ServerProcess(env=env, node_id="n0", log_path=tmp_path / "node.log")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_a_peer_that_never_answers_is_pinged_then_dropped(node: ServerProcess) -> None:
    sock = await RawSocket.open(node, "mute")
    opened = time.monotonic()
    frames = []
    with pytest.raises(asyncio.IncompleteReadError):
        while True:  # read everything, answer nothing
            opcode, _ = await sock.read(timeout=10 * PERIOD_S)
            frames.append(opcode)
    gone_after = time.monotonic() - opened
    # one ping, then the connection is dropped: no close frame, the peer is gone
    assert frames == [WS_PING]
    # two to three periods after its last frame (the handshake), with room for a slow host
    assert PERIOD_S < gone_after < 3 * PERIOD_S + 2.0
    await sock.close()


async def test_a_peer_that_answers_stays_and_gets_a_ping_every_other_period(
    node: ServerProcess,
) -> None:
    sock = await RawSocket.open(node, "awake")
    pings = 0
    until = time.monotonic() + 10 * PERIOD_S
    while (left := until - time.monotonic()) > 0:
        try:
            opcode, payload = await sock.read(timeout=left)
        except TimeoutError:
            break
        assert opcode == WS_PING, (opcode, payload)
        pings += 1
        sock.writer.write(ws_frame(WS_PONG, payload))
    # one every two periods: 5 in 10, give or take the phase
    assert 4 <= pings <= 6
    sock.writer.write(ws_frame(TEXT, b'{"type":"ping","ref":"r"}'))
    while True:  # still served: its application ping gets its pong
        opcode, payload = await sock.read()
        if opcode == TEXT:
            assert orjson.loads(payload) == {"type": "pong", "ref": "r"}
            break
    await sock.close()


async def test_a_client_that_pings_is_answered_and_counts_as_alive(node: ServerProcess) -> None:
    """It never answers the node's pings, but its own keep it: they are frames heard."""
    sock = await RawSocket.open(node, "asker")
    longest = b"x" * 125  # a control frame's largest payload
    until = time.monotonic() + 8 * PERIOD_S
    n = 0
    while time.monotonic() < until:
        payload = longest if n % 2 else f"are you there {n}".encode()
        sock.writer.write(ws_frame(WS_PING, payload))
        while True:
            opcode, got = await sock.read()
            if opcode == WS_PONG:
                assert got == payload
                break
            assert opcode == WS_PING  # the node's own, unanswered here
        n += 1
        await asyncio.sleep(PERIOD_S / 2)
    # still open, after four periods of unanswered pings
    sock.writer.write(ws_frame(TEXT, b'{"type":"ping","ref":"still"}'))
    while (frame := await sock.read())[0] != TEXT:
        pass
    assert orjson.loads(frame[1]) == {"type": "pong", "ref": "still"}
    await sock.close()
