"""The HTTP side of a node: routes, authentication, errors, health and metrics.

aiohttp serves HTTP and WebSocket from one event loop; the figures behind the
choice are in docs/architecture.md. Outbound WebSocket frames bypass aiohttp's
per-message writer (see writer.py); inbound frames, pings and the close
handshake stay with aiohttp.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from parley.auth.tokens import InvalidToken, TokenVerifier, issue_token
from parley.gateway.connection import MAX_FRAME_BYTES, Connection
from parley.gateway.node import Node
from parley.gateway.openapi import OPENAPI
from parley.gateway.rest import NODE, ApiError, add_routes, client_address, error_response
from parley.log.base import LogUnavailable
from parley.protocol.names import dm_room, is_user_id
from parley.storage.base import RoomExists, StoreUnavailable

logger = logging.getLogger(__name__)

DEV_ROOM = "general"
VERIFIER: web.AppKey[TokenVerifier] = web.AppKey("verifier", TokenVerifier)
Handler = Callable[[web.Request], Awaitable[StreamResponse]]

_PUBLIC = ("/healthz", "/readyz", "/metrics", "/api/openapi.json", "/api/dev/token", "/ws")


class AccessLogger(AbstractAccessLogger):
    """Logs the path without its query string: tokens travel in `?token=`."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.1fms',
            request.remote,
            request.method,
            request.path,
            response.status,
            time * 1000,
        )


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None


# The middlewares are plain functions that return the next handler's
# awaitable rather than coroutines that await it: a WebSocket handler runs for
# the connection's whole life, and every coroutine frame above it would stay
# alive as long (about 300 bytes each, per connection). The socket handler
# answers its own errors (see `websocket`).


@web.middleware
def errors_middleware(request: web.Request, handler: Handler) -> Awaitable[StreamResponse]:
    if request.match_info.handler is websocket:
        return handler(request)
    return _answer_errors(request, handler)


async def _answer_errors(request: web.Request, handler: Handler) -> StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        return error_answer(request, exc)


def error_answer(request: web.Request, exc: Exception) -> StreamResponse:
    """The JSON answer to what a handler let through; a redirect (3xx) goes on up."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message)
    if isinstance(exc, StoreUnavailable | LogUnavailable):
        return error_response(503, "internal", "the database or the log is unavailable; retry")
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        code = {401: "unauthorized", 404: "not_found", 409: "conflict", 429: "rate_limited"}.get(
            exc.status, "bad_request" if exc.status < 500 else "internal"
        )
        if exc.status == 413:
            code = "too_large"
        return error_response(exc.status, code, exc.reason)
    if isinstance(exc, ConnectionResetError):
        # The client left mid-request: nobody to answer, and not a server fault.
        logger.debug("%s %s: client gone mid-request", request.method, request.path)
        return web.Response(status=400)
    logger.error("%s %s failed", request.method, request.path, exc_info=exc)
    return error_response(500, "internal", "internal error")


@web.middleware
def auth_middleware(request: web.Request, handler: Handler) -> Awaitable[StreamResponse]:
    if request.path.startswith("/api/") and request.path not in _PUBLIC:
        try:
            request["identity"] = request.app[VERIFIER].verify(bearer(request))
        except InvalidToken as exc:
            return _ready(error_response(401, "unauthorized", str(exc)))
    return handler(request)


async def _ready(response: StreamResponse) -> StreamResponse:
    return response


def origin_allowed(request: web.Request, allowed: tuple[str, ...] | None) -> bool:
    """Browsers send Origin; other clients need not. With a list set, a browser
    page from any other origin cannot open a socket with its user's token. The
    node's own page (same host) is always allowed."""
    origin = request.headers.get("Origin")
    if allowed is None or origin is None:
        return True
    origin = origin.rstrip("/")
    return origin in allowed or origin.split("://", 1)[-1] == request.host


class SocketQuery(NamedTuple):
    token: str | None
    room: str | None
    receiver: str | None
    since: str | None
    device: str | None


def socket_query(request: web.Request) -> SocketQuery:
    """The /ws query, parsed without keeping the parse.

    `request.query` is cached on the request's URL, which lives as long as the
    connection: about 600 bytes per connection for a query read once. The
    first of repeated parameters counts, as with `request.query.get`.
    """
    params: dict[str, str] = {}
    for name, value in parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True):
        params.setdefault(name, value)
    return SocketQuery(
        params.get("token"),
        params.get("room") or None,
        params.get("receiver") or params.get("receiverId") or None,
        params.get("since") or None,
        params.get("device") or None,
    )


async def websocket(request: web.Request) -> web.StreamResponse:
    """The socket's whole life; it answers its own errors (see errors_middleware)."""
    try:
        node = request.app[NODE]
        settings = node.settings
        if not origin_allowed(request, settings.allowed_origins):
            return error_response(403, "forbidden", "this origin may not connect")
        if node.draining:
            # The listener is closed, but a handshake may still arrive on a
            # connection accepted before: the client should go to another node.
            return error_response(503, "internal", "server going away; connect to another node")
        address = client_address(request)
        if not node.addresses.allow_handshake(address):
            return error_response(429, "rate_limited", "too many connection attempts; retry later")
        query = socket_query(request)
        try:
            identity = request.app[VERIFIER].verify(query.token or bearer(request))
        except InvalidToken as exc:
            return error_response(401, "unauthorized", str(exc))
        if not node.user_handshakes.allow(identity.user):
            return error_response(429, "rate_limited", "too many connection attempts for this user")
        if len(tuple(node.hub.sessions_of(identity.user))) >= settings.max_connections_per_user:
            return error_response(429, "rate_limited", "too many open connections for this user")
        room = query.room
        if query.receiver is not None:
            receiver = query.receiver
            room = dm_room(identity.user, receiver) if is_user_id(receiver) else f"dm:{receiver}"
        since: int | None = None
        if query.since is not None:
            try:
                since = int(query.since)
            except ValueError:
                return error_response(400, "bad_request", "since must be an integer")
            if since < -1:
                return error_response(400, "bad_request", "since must be >= -1")
        device = query.device
        if device is not None and len(device) > 64:
            return error_response(400, "bad_request", "device must be at most 64 chars")
        del query  # the token and the rest: this frame lives as long as the socket
        if not node.addresses.open(address):
            return error_response(
                429, "rate_limited", "too many open connections from this address"
            )
        node.websockets += 1
        try:
            # aiohttp refuses a message whose size equals max_msg_size; PROTOCOL
            # closes only one *over* 64 KiB, so the limit given is one byte more.
            # No aiohttp heartbeat (a timer per socket, pings in step for
            # sockets that came together): the node's liveness sweep pings,
            # and the connection answers pings itself (gateway/liveness.py).
            ws = web.WebSocketResponse(
                compress=False,
                max_msg_size=MAX_FRAME_BYTES + 1,
                heartbeat=None,
                autoping=False,
                timeout=5.0,
            )
            await ws.prepare(request)
            transport = request.transport
            if transport is None:
                return ws
            connection = Connection(node, ws, transport, identity.user, device, address)
            await connection.run(room, since)
            return ws
        finally:
            node.websockets -= 1
            node.addresses.close(address)
    except Exception as exc:
        return error_answer(request, exc)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "node": request.app[NODE].node_id})


async def readyz(request: web.Request) -> web.Response:
    checks = await request.app[NODE].ready()
    return web.json_response(
        {"ready": all(checks.values()), **checks}, status=200 if all(checks.values()) else 503
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[NODE].metrics.render(), content_type="text/plain")


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


def dev_token_handler(secret: str, issuer: str | None, audience: str | None) -> Handler:
    async def dev_token(request: web.Request) -> web.StreamResponse:
        try:
            body: Any = await request.json()
        except ValueError:
            return error_response(400, "bad_request", "body must be JSON")
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, str) or not is_user_id(user):
            return error_response(400, "bad_request", "user must match [A-Za-z0-9_.-]{1,64}")
        token = issue_token(secret, user, issuer=issuer, audience=audience)
        # A dev node is for trying Parley out: everyone who signs in there is
        # in the "general" room, so the first two users can talk at once.
        node = request.app[NODE]
        try:
            await node.create_room(DEV_ROOM, "General", user, [])
        except RoomExists:
            await node.add_member(DEV_ROOM, user)
        return web.json_response({"token": token, "room": DEV_ROOM})

    return dev_token


def web_root() -> Path:
    return Path(str(resources.files("parley") / "web"))


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(web_root() / "index.html")


async def revalidate_page(request: web.Request, response: web.StreamResponse) -> None:
    """The page and its modules are revalidated (ETag), so an upgrade reaches browsers."""
    if request.path == "/" or request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-cache"


def build_app(node: Node, verifier: TokenVerifier, *, dev_secret: str | None) -> web.Application:
    settings = node.settings
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware], client_max_size=256 * 1024
    )
    app[NODE] = node
    app[VERIFIER] = verifier
    app.on_response_prepare.append(revalidate_page)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/openapi.json", openapi)
    if dev_secret is not None:
        app.router.add_post(
            "/api/dev/token",
            dev_token_handler(dev_secret, settings.jwt_issuer, settings.jwt_audience),
        )
    add_routes(app)
    app.router.add_get("/", index)
    app.router.add_static("/static/", web_root())
    return app
