"""Fuzzing a live node: each input sent on a real socket, its answer checked against the model.

A `Prober` owns one raw WebSocket to a `parley serve` node. For every input
it sends the frame, then a sentinel `ping`; frames are handled in order, so
everything between the input and the sentinel's `pong` is the direct answer
to the input (an `ack` may come later: it waits for the log). That answer
must be the one tests/fuzz/model.py derives from PROTOCOL.md, and the
connection must stay open unless PROTOCOL.md (or RFC 6455) closes it.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from parley.protocol.codes import ErrorCode
from parley.protocol.frames import History, Ping, Read, Send, Subscribe, Typing, Unsubscribe
from tests.fuzz.model import MAX_ERROR_MESSAGE, MAX_FRAME_BYTES, Expect, expect_text, is_member_room
from tests.harness import ServerProcess, token

# Frames a session may get at any moment, not as the answer to one of its frames.
UNSOLICITED = frozenset({"message", "presence", "typing", "receipt"})
# PROTOCOL.md's error budget is 50 client errors in 10 s (then 1008): a prober
# opens a fresh connection well before it, so that every input is judged alone.
ERRORS_PER_CONNECTION = 40
CLOSE_TOO_LARGE = 1009
CLOSE_INVALID_UTF8 = 1007  # RFC 6455 §8.1: a text frame that is not UTF-8 fails the connection


@dataclass(frozen=True)
class Text:
    """A text frame."""

    data: str


@dataclass(frozen=True)
class Binary:
    """A binary frame."""

    data: bytes


@dataclass(frozen=True)
class BadUtf8:
    """A text frame whose payload is not UTF-8 (sent as raw bytes)."""

    data: bytes


Payload = Text | Binary | BadUtf8


class ProbeFailed(AssertionError):
    pass


@dataclass
class Prober:
    node: ServerProcess
    user: str
    group_rooms: frozenset[str]
    http: aiohttp.ClientSession = field(default_factory=aiohttp.ClientSession)
    ws: aiohttp.ClientWebSocketResponse | None = None
    errors_here: int = 0
    connections: int = 0
    inputs: int = 0
    frames: list[dict[str, Any]] = field(default_factory=list)  # every frame received
    close_code: int | None = None  # the code of the server's close frame, when it sent one
    _sentinels: itertools.count[int] = field(default_factory=itertools.count)

    # Connections ------------------------------------------------------------------

    async def connect(self) -> aiohttp.ClientWebSocketResponse:
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        self.ws = await self.http.ws_connect(
            self.node.ws_url, params={"token": token(self.user)}, max_msg_size=0, autoping=True
        )
        self.connections += 1
        self.errors_here = 0
        hello = await self._next(10.0)
        if hello is None or hello.get("type") != "hello":
            raise ProbeFailed(f"no hello: {hello}")
        return self.ws

    async def open_ws(self) -> aiohttp.ClientWebSocketResponse:
        if self.ws is None or self.ws.closed or self.errors_here >= ERRORS_PER_CONNECTION:
            return await self.connect()
        return self.ws

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        await self.http.close()

    async def _next(self, timeout: float) -> dict[str, Any] | None:
        """The next text frame, or None once the server closed the socket."""
        assert self.ws is not None
        msg = await self.ws.receive(timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            frame: dict[str, Any] = orjson.loads(msg.data)
            self.frames.append(frame)
            return frame
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
        ):
            # the code the server sent: aiohttp's close_code turns into 1006 when
            # its automatic close reply finds the connection already gone
            code = msg.data if msg.type == aiohttp.WSMsgType.CLOSE else self.ws.close_code
            self.close_code = int(code) if code is not None else None
            return None
        raise ProbeFailed(f"unexpected {msg.type}: {msg.data!r}")

    async def expect_close(self, code: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (frame := await self._next(max(0.01, deadline - time.monotonic()))) is not None:
            if frame.get("type") not in UNSOLICITED | {"ack"}:
                raise ProbeFailed(f"expected a close {code}, got {frame}")
        if self.close_code != code:
            raise ProbeFailed(f"closed with {self.close_code}, not {code}")
        self.ws = None

    async def answer(
        self, timeout: float = 10.0
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Send the sentinel; return the direct answer before its pong, and the acks seen."""
        assert self.ws is not None
        ref = f"zz-sentinel-{next(self._sentinels)}"
        await self.ws.send_str(orjson.dumps({"type": "ping", "ref": ref}).decode())
        direct: list[dict[str, Any]] = []
        acks: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeFailed(f"no pong for the sentinel; got {direct}")
            frame = await self._next(left)
            if frame is None:
                raise ProbeFailed(f"closed with {self.ws.close_code} after {direct}")
            kind = frame.get("type")
            if kind == "pong" and frame.get("ref") == ref:
                return direct, acks
            if kind == "ack":
                acks.append(frame)
            elif kind not in UNSOLICITED:
                direct.append(frame)

    async def wait_ack(
        self, acks: list[dict[str, Any]], room: str, client_id: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + 15.0
        while True:
            for a in acks:
                if a.get("room") == room and a.get("client_id") == client_id:
                    return a
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeFailed(f"no ack for {room}/{client_id}")
            frame = await self._next(left)
            if frame is None:
                raise ProbeFailed("closed while waiting for an ack")
            if frame.get("type") == "ack":
                acks.append(frame)
            elif frame.get("type") == "error":
                raise ProbeFailed(f"error instead of an ack: {frame}")

    # Inputs -----------------------------------------------------------------------

    async def probe(self, payload: Payload) -> None:
        """Send one input and check the answer; raises ProbeFailed (an AssertionError)."""
        self.inputs += 1
        if self.node.proc is None or self.node.proc.returncode is not None:
            raise ProbeFailed("the server process is gone")
        ws = await self.open_ws()
        if isinstance(payload, BadUtf8):
            await ws.send_frame(payload.data, aiohttp.WSMsgType.TEXT)
            await self.expect_close(CLOSE_INVALID_UTF8)
            return
        raw = payload.data.encode() if isinstance(payload, Text) else payload.data
        if len(raw) > MAX_FRAME_BYTES:
            if isinstance(payload, Text):
                await ws.send_str(payload.data)
            else:
                await ws.send_bytes(payload.data)
            await self.expect_close(CLOSE_TOO_LARGE)
            return
        if isinstance(payload, Binary):
            await ws.send_bytes(payload.data)
            direct, _ = await self.answer()
            self._check_error(direct, Expect(codes=frozenset({ErrorCode.BAD_REQUEST})))
            return
        await ws.send_str(payload.data)
        want = expect_text(payload.data)
        direct, acks = await self.answer()
        if not want.valid:
            self._check_error(direct, want)
            return
        await self._check_valid(want, direct, acks)

    def _check_error(self, direct: list[dict[str, Any]], want: Expect) -> None:
        self.errors_here += 1
        if len(direct) != 1 or direct[0].get("type") != "error":
            raise ProbeFailed(f"expected one error {sorted(want.codes)}, got {direct}")
        err = direct[0]
        allowed = {str(c) for c in want.codes}
        if err.get("code") not in allowed:
            raise ProbeFailed(f"error {err} is not one of {sorted(allowed)}")
        if err.get("ref") != want.ref or (want.ref is None and "ref" in err):
            raise ProbeFailed(f"error {err} should carry ref {want.ref!r}")
        message = err.get("message")
        if not isinstance(message, str) or not 0 < len(message) <= MAX_ERROR_MESSAGE:
            raise ProbeFailed(f"bad error message in {err}")
        if set(err) - {"type", "code", "message", "ref"}:
            raise ProbeFailed(f"unexpected fields in {err}")

    def _with_ref(self, frame: dict[str, Any], ref: str | None) -> dict[str, Any]:
        return frame if ref is None else {**frame, "ref": ref}

    async def _check_valid(
        self, want: Expect, direct: list[dict[str, Any]], acks: list[dict[str, Any]]
    ) -> None:
        frame = want.frame
        assert frame is not None
        if isinstance(frame, Ping):
            if direct != [self._with_ref({"type": "pong"}, frame.ref)]:
                raise ProbeFailed(f"ping answered with {direct}")
            return
        if isinstance(frame, Unsubscribe):
            expected = self._with_ref({"type": "unsubscribed", "room": frame.room}, frame.ref)
            if direct != [expected]:
                raise ProbeFailed(f"unsubscribe answered with {direct}")
            return
        member = is_member_room(frame.room, self.user, self.group_rooms)
        if not member:
            self._check_error(
                direct, Expect(codes=frozenset({ErrorCode.NOT_MEMBER}), ref=frame.ref)
            )
            return
        if isinstance(frame, Typing | Read):
            if direct:
                raise ProbeFailed(f"{frame} answered with {direct}")
            return
        if isinstance(frame, Send):
            if direct:
                raise ProbeFailed(f"send answered with {direct} before its ack")
            ack = await self.wait_ack(acks, frame.room, frame.client_id)
            if ack.get("ref") != frame.ref or not isinstance(ack.get("seq"), int):
                raise ProbeFailed(f"ack {ack} for {frame}")
            return
        if isinstance(frame, Subscribe):
            if [f.get("type") for f in direct] != ["subscribed", "history"]:
                raise ProbeFailed(f"subscribe answered with {direct}")
            sub, hist = direct
            if sub != self._with_ref(
                {"type": "subscribed", "room": frame.room, "head": sub.get("head")}, frame.ref
            ):
                raise ProbeFailed(f"subscribed frame {sub}")
            self._check_history(hist, frame.room, frame.ref, 1000)
            if frame.since is not None and any(m["seq"] <= frame.since for m in hist["messages"]):
                raise ProbeFailed(f"history after since={frame.since}: {hist}")
            return
        assert isinstance(frame, History)
        if len(direct) != 1:
            raise ProbeFailed(f"history answered with {direct}")
        self._check_history(direct[0], frame.room, frame.ref, frame.limit)
        if frame.before is not None and any(
            m["seq"] >= frame.before for m in direct[0]["messages"]
        ):
            raise ProbeFailed(f"history before={frame.before}: {direct[0]}")

    def _check_history(self, hist: dict[str, Any], room: str, ref: str | None, limit: int) -> None:
        if hist.get("type") != "history" or hist.get("room") != room or hist.get("ref") != ref:
            raise ProbeFailed(f"history frame {hist}")
        messages = hist.get("messages")
        if (
            not isinstance(messages, list)
            or len(messages) > limit
            or not isinstance(hist.get("has_more"), bool)
        ):
            raise ProbeFailed(f"history frame {hist}")
        seqs = [m["seq"] for m in messages]
        if seqs != sorted(set(seqs)) or any(m["room"] != room for m in messages):
            raise ProbeFailed(f"history out of order or of another room: {hist}")


async def healthz(node: ServerProcess) -> int:
    async with aiohttp.ClientSession() as http, http.get(node.url + "/healthz") as resp:
        return resp.status


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
