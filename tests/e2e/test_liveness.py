"""Dead peers are found by the node's pings; live ones, and the pings they send, are answered.

One embedded node with PARLEY_PING_INTERVAL=0.3 s, so that a test sees several
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

PERIOD_S = 0.3


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
    pings = 0
    with pytest.raises(asyncio.IncompleteReadError):
        while True:  # read everything, answer nothing
            opcode, _ = await sock.read(timeout=10 * PERIOD_S)
            pings += opcode == WS_PING
    gone_after = time.monotonic() - opened
    assert pings == 1
    # two to three periods after its last frame (the handshake), with room for a slow host
    assert 1.5 * PERIOD_S < gone_after < 3 * PERIOD_S + 2.0
    await sock.close()


async def test_a_peer_that_answers_stays_and_gets_a_ping_every_other_period(
    node: ServerProcess,
) -> None:
    sock = await RawSocket.open(node, "awake")
    pings = 0
    until = time.monotonic() + 12 * PERIOD_S
    while (left := until - time.monotonic()) > 0:
        try:
            opcode, payload = await sock.read(timeout=left)
        except TimeoutError:
            break
        assert opcode == WS_PING, (opcode, payload)
        pings += 1
        sock.writer.write(ws_frame(WS_PONG, payload))
    # one every two periods: 6 in 12, give or take the phase and a slow host
    assert 3 <= pings <= 7
    sock.writer.write(ws_frame(TEXT, b'{"type":"ping","ref":"r"}'))
    while True:  # still served: its application ping gets its pong
        opcode, payload = await sock.read()
        if opcode == TEXT:
            assert orjson.loads(payload) == {"type": "pong", "ref": "r"}
            break
    await sock.close()


async def test_a_client_ping_is_answered_with_its_payload(node: ServerProcess) -> None:
    sock = await RawSocket.open(node, "asker")
    sock.writer.write(ws_frame(WS_PING, b"are you there"))
    while True:
        opcode, payload = await sock.read()
        if opcode == WS_PONG:
            assert payload == b"are you there"
            break
        assert opcode == WS_PING  # the node's own, unanswered here: fine for a while
    await sock.close()
