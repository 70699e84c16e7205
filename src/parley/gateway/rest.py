"""The REST API under /api, on the same node and with the same rules as the socket.

A room that does not exist and a room the caller is not in answer the same
404 with the same body everywhere, so room ids don't leak.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from parley.auth.tokens import Identity
from parley.gateway.node import Node, NotMember, SendFailed
from parley.protocol.codes import ErrorCode
from parley.protocol.errors import FrameError
from parley.protocol.frames import check_body, check_client_id, check_limit, decode_json_object
from parley.protocol.messages import ack_body, format_ts
from parley.protocol.names import dm_members, is_group_room_id, is_user_id
from parley.storage.base import Room, RoomExists

NODE: web.AppKey[Node] = web.AppKey("node", Node)

STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.NOT_MEMBER: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 503,
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def not_found() -> ApiError:
    return ApiError(404, "not_found", "no such room")


def room_json(room: Room) -> dict[str, Any]:
    return {
        "id": room.id,
        "name": room.name,
        "owner": room.owner,
        "kind": room.kind,
        "members": list(room.members),
    }


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        return decode_json_object(await request.read())
    except FrameError as exc:
        raise ApiError(400, "bad_request", exc.message) from None


def optional_field(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "bad_request", f"field {name!r} must be a string")
    return value


def field(body: dict[str, Any], name: str) -> str:
    value = optional_field(body, name)
    if value is None:
        raise ApiError(400, "bad_request", f"missing field {name!r}")
    return value


def node_of(request: web.Request) -> Node:
    return request.app[NODE]


def client_address(request: web.Request) -> str:
    """The client's address, as the per-address limits see it (gateway/addresses.py)."""
    # Every X-Forwarded-For line: a proxy may add its own line rather than
    # append to the one the client sent.
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", ())) or None
    return node_of(request).addresses.client(request.remote, forwarded)


def identity_of(request: web.Request) -> Identity:
    identity: Identity = request["identity"]
    return identity


async def member_room(node: Node, room_id: str, user: str) -> Room:
    """The room if the user is a member; the one 404 otherwise."""
    pair = dm_members(room_id)
    if pair is not None:
        if user not in pair:
            raise not_found()
        return Room(room_id, room_id, None, "dm", pair)
    if not is_group_room_id(room_id):
        raise not_found()
    room = await node.store.get_room(room_id)
    if room is None or user not in room.members:
        raise not_found()
    return room


async def create_room(request: web.Request) -> web.Response:
    node, me = node_of(request), identity_of(request)
    body = await json_body(request)
    room_id = field(body, "id")
    if not is_group_room_id(room_id):
        raise ApiError(400, "bad_request", "room id must match [A-Za-z0-9_.-]{1,64}")
    name = optional_field(body, "name") or room_id
    if len(name) > 200:
        raise ApiError(400, "bad_request", "name is over 200 chars")
    members = body.get("members", [])
    if not isinstance(members, list) or not all(
        isinstance(m, str) and is_user_id(m) for m in members
    ):
        raise ApiError(400, "bad_request", "members must be a list of user ids")
    if len(members) > 10_000:
        raise ApiError(400, "bad_request", "too many members")
    try:
        room = await node.create_room(room_id, name, me.user, members)
    except RoomExists:
        raise ApiError(409, "conflict", "a room with this id exists") from None
    return web.json_response(room_json(room), status=201)


async def list_rooms(request: web.Request) -> web.Response:
    node, me = node_of(request), identity_of(request)
    out = [
        {**room_json(s.room), "head": s.head, "last_read": s.last_read, "unread": s.unread}
        for s in await node.summaries(me.user)
    ]
    return web.json_response(out)


async def get_room(request: web.Request) -> web.Response:
    node, me = node_of(request), identity_of(request)
    room = await member_room(node, request.match_info["id"], me.user)
    return web.json_response(room_json(room))


async def add_member(request: web.Request) -> web.Response:
    node, me = node_of(request), identity_of(request)
    room = await member_room(node, request.match_info["id"], me.user)
    body = await json_body(request)
    user = field(body, "user")
    if not is_user_id(user):
        raise ApiError(400, "bad_request", "not a valid user id")
    if room.kind == "dm":
        raise ApiError(400, "bad_request", "a direct-message room has exactly two members")
    added = await node.add_member(room.id, user)
    updated = await node.store.get_room(room.id)
    return web.json_response(room_json(updated or room), status=201 if added else 200)


async def remove_member(request: web.Request) -> web.Response:
    node, me = node_of(request), identity_of(request)
    room = await member_room(node, request.match_info["id"], me.user)
    user = request.match_info["user"]
    if room.kind == "dm":
        raise ApiError(400, "bad_request", "a direct-message room has exactly two members")
    if me.user != room.owner and me.user != user:
        raise ApiError(403, "forbidden", "only the owner may remove another member")
    if not await node.remove_member(room.id, user):
        raise ApiError(404, "not_found", "no such member")
    return web.Response(status=204)


def _int_query(request: web.Request, name: str, minimum: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be an integer") from None
    if value < minimum:
        raise ApiError(400, "bad_request", f"{name} must be >= {minimum}")
    return value


async def get_messages(request: web.Request) -> web.Response:
    node, me = node_of(request), identity_of(request)
    room = await member_room(node, request.match_info["id"], me.user)
    before = _int_query(request, "before", 0)
    try:
        limit = check_limit(_int_query(request, "limit", -(2**63)))
    except FrameError as exc:
        raise ApiError(400, "bad_request", exc.message) from None
    messages, has_more = await node.page(room.id, before, limit)
    return web.json_response(
        {"room": room.id, "messages": [m.as_dict() for m in messages], "has_more": has_more}
    )


async def post_message(request: web.Request) -> web.Response:
    node, me = node_of(request), identity_of(request)
    room_id = request.match_info["id"]
    try:
        await node.check_member(room_id, me.user)
    except NotMember:
        raise not_found() from None
    body = await json_body(request)
    try:
        client_id = check_client_id(field(body, "client_id"))
        text = check_body(field(body, "body"))
    except FrameError as exc:
        raise ApiError(STATUS[exc.code], str(exc.code), exc.message) from None
    if not node.addresses.allow_message(client_address(request)):
        raise ApiError(429, "rate_limited", "too many messages from this address")
    if not node.send_limiter.allow(me.user):
        raise ApiError(429, "rate_limited", "sending too fast")
    try:
        msg = await node.send_and_wait(me.user, room_id, client_id, text)
    except SendFailed as exc:
        raise ApiError(STATUS.get(exc.code, 503), str(exc.code), exc.message) from None
    return web.json_response(ack_body(msg), status=201)


STATS_MAX_MINUTES = 7 * 24 * 60


async def get_stats(request: web.Request) -> web.Response:
    """The analytics worker's counts for the rooms the caller owns.

    `?room=ID` picks one room (404 unless the caller is a member, 403 unless
    the owner); without it, every group room the caller owns. `minutes`
    (default 60) is how far back.
    """
    node, me = node_of(request), identity_of(request)
    minutes = _int_query(request, "minutes", 1) or 60
    if minutes > STATS_MAX_MINUTES:
        raise ApiError(400, "bad_request", f"minutes must be <= {STATS_MAX_MINUTES}")
    room_id = request.query.get("room")
    if room_id is not None:
        room = await member_room(node, room_id, me.user)
        if room.owner != me.user:
            raise ApiError(403, "forbidden", "only the room's owner may read its stats")
        rooms = [room]
    else:
        rooms = [r for r in await node.store.rooms_of(me.user) if r.owner == me.user]
    since_ms = int(time.time() * 1000) // 60_000 * 60_000 - (minutes - 1) * 60_000
    out = []
    for room in rooms:
        rows = await node.store.room_stats(room.id, since_ms)
        messages = sum(r.messages for r in rows)
        lat_n = sum(r.latency_count for r in rows)
        lat_sum = sum(r.latency_sum_ms for r in rows)
        out.append(
            {
                "room": room.id,
                "messages": messages,
                "active_users": await node.store.active_users(room.id, since_ms),
                "latency_avg_ms": round(lat_sum / lat_n, 2) if lat_n else None,
                "minutes": [
                    {
                        "minute": format_ts(r.minute_ms),
                        "messages": r.messages,
                        "active_users": r.active_users,
                        "latency_avg_ms": (
                            round(r.latency_sum_ms / r.latency_count, 2)
                            if r.latency_count
                            else None
                        ),
                    }
                    for r in rows
                ],
            }
        )
    return web.json_response({"since": format_ts(since_ms), "rooms": out})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/stats", get_stats)
    app.router.add_post("/api/rooms", create_room)
    app.router.add_get("/api/rooms", list_rooms)
    app.router.add_get("/api/rooms/{id}", get_room)
    app.router.add_post("/api/rooms/{id}/members", add_member)
    app.router.add_delete("/api/rooms/{id}/members/{user}", remove_member)
    app.router.add_get("/api/rooms/{id}/messages", get_messages)
    app.router.add_post("/api/rooms/{id}/messages", post_message)
