"""Opening one connection: the WebSocket handshake and the `hello` that must come first.

The outcome tells the reconnect loop what to do: a `Connected` hello, or
`Refused` (ask for a new token), or `Retry` (wait and try again), or a
`ClientError` that no retry can fix (e.g. a device id the server refuses).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import orjson

from parley.client.errors import BadRequest, ProtocolViolation
from parley.client.events import Connected, parse_hello

logger = logging.getLogger("parley.client")

MAX_FRAME_BYTES = 64 * 1024 * 1024  # a 1,000-message replay of 4,096-char bodies fits
CLOSE_UNAUTHORIZED = 4401
CLOSE_REPLACED = 4409

CLOSED_TYPES = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
)


class Refused(Exception):
    """The server refused this token (HTTP 401 at the handshake, or close 4401)."""

    def __init__(self, token: str) -> None:
        super().__init__("token refused")
        self.token = token


class Retry(Exception):
    """Connecting failed in a way that trying again later may fix."""


def decode(data: str) -> dict[str, Any]:
    """One server frame's JSON object."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProtocolViolation("a frame that is not JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolViolation("a frame that is not a JSON object")
    return obj


async def open_connection(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    *,
    device: str | None,
    heartbeat: float,
    reconnect: bool,
) -> tuple[aiohttp.ClientWebSocketResponse, Connected]:
    """Connect and read `hello` (the caller bounds the time with `asyncio.timeout`).

    The token travels in the `Authorization` header, not the query string,
    so that no proxy or access log along the way writes it down.
    """
    params = {"device": device} if device else {}
    try:
        ws = await http.ws_connect(
            url,
            params=params,
            headers={"Authorization": f"Bearer {token}"},
            heartbeat=heartbeat,
            compress=0,
            max_msg_size=MAX_FRAME_BYTES,
        )
        try:
            return ws, await _read_hello(ws, token, reconnect)
        except BaseException:
            await ws.close()
            raise
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status == 401:
            raise Refused(token) from None
        if exc.status == 400:  # e.g. a device id over 64 chars: retrying cannot help
            raise BadRequest("bad_request", exc.message) from None
        raise Retry(f"handshake answered HTTP {exc.status}") from None
    except (aiohttp.ClientError, OSError, TimeoutError, ProtocolViolation) as exc:
        raise Retry(str(exc) or type(exc).__name__) from None


async def _read_hello(
    ws: aiohttp.ClientWebSocketResponse, token: str, reconnect: bool
) -> Connected:
    while True:
        msg = await ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            obj = decode(msg.data)
            if obj.get("type") == "hello":
                return parse_hello(obj, reconnect)
            if obj.get("type") == "error":  # e.g. internal: the database is down
                logger.info("server error before hello: %s", obj.get("message"))
        elif msg.type in CLOSED_TYPES:
            if ws.close_code == CLOSE_UNAUTHORIZED:
                raise Refused(token)
            raise Retry(f"closed with {ws.close_code} before hello")
