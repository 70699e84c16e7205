"""The REST API (`/api`) as typed calls, for what the socket does not do: rooms and members.

    rest = client.rest                       # same node, same token as the socket
    for room in await rest.rooms():
        print(room.id, room.unread)
    await rest.create_room("plans", members=["bob"])

Errors raise the same exceptions as the socket (`NotMember` for the one 404 a
missing or foreign room gets, `Conflict`, `Forbidden`, ...). A 401 asks the
token provider for a new token and tries once more.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from parley.client.endpoints import Endpoints
from parley.client.errors import ProtocolViolation, ServerError, Unauthorized, server_error
from parley.client.events import Ack, HistoryPage, parse_ack, parse_history
from parley.client.tokens import TokenSource


@dataclass(frozen=True, slots=True)
class RoomInfo:
    id: str
    name: str
    members: tuple[str, ...]
    owner: str | None = None
    kind: str = "group"  # or "dm"


@dataclass(frozen=True, slots=True)
class RoomSummary:
    """A room as `GET /api/rooms` lists it: with its head, the user's last read, and unread."""

    id: str
    name: str
    members: tuple[str, ...]
    head: int
    last_read: int
    unread: int
    owner: str | None = None
    kind: str = "group"


def _room(obj: Any) -> RoomInfo:
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        raise ProtocolViolation("a room must be an object with an id")
    members = obj.get("members") or []
    owner = obj.get("owner")
    return RoomInfo(
        id=obj["id"],
        name=str(obj.get("name") or obj["id"]),
        members=tuple(str(m) for m in members),
        owner=owner if isinstance(owner, str) else None,
        kind=str(obj.get("kind") or "group"),
    )


def _summary(obj: Any) -> RoomSummary:
    info = _room(obj)
    numbers = {k: obj.get(k) for k in ("head", "last_read", "unread")}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in numbers.values()):
        raise ProtocolViolation("a room summary needs integer head, last_read and unread")
    return RoomSummary(
        info.id,
        info.name,
        info.members,
        numbers["head"],
        numbers["last_read"],
        numbers["unread"],
        info.owner,
        info.kind,
    )


def _path(room: str) -> str:
    return quote(room, safe=":")


async def _error(resp: aiohttp.ClientResponse) -> ServerError:
    code, message = "internal" if resp.status >= 500 else "bad_request", resp.reason or ""
    try:
        body = await resp.json(content_type=None)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", code))
        message = str(body["error"].get("message", message))
    return server_error(code, message)


class RestClient:
    def __init__(self, base_url: str, tokens: TokenSource, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self._session = session

    async def call(
        self, method: str, path: str, json: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        """One request; the decoded JSON answer (None for 204). Raises typed errors."""
        for attempt in range(2):
            token = await self.tokens.get()
            async with self._session.request(
                method,
                self.base_url + path,
                json=json,
                params=params,
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                if resp.status == 401:
                    if attempt == 0 and self.tokens.refreshable:
                        self.tokens.invalidate(token)
                        continue
                    raise Unauthorized(f"{method} {path}: the server refused the token")
                if resp.status >= 400:
                    raise await _error(resp)
                if resp.status == 204:
                    return None
                return await resp.json(content_type=None)
        raise Unauthorized(f"{method} {path}: the server refused a fresh token")  # pragma: no cover

    async def rooms(self) -> list[RoomSummary]:
        """The user's rooms (DM rooms once they have a message), with unread counts."""
        body = await self.call("GET", "/api/rooms")
        if not isinstance(body, list):
            raise ProtocolViolation("GET /api/rooms must answer a list")
        return [_summary(r) for r in body]

    async def room(self, room: str) -> RoomInfo:
        return _room(await self.call("GET", f"/api/rooms/{_path(room)}"))

    async def create_room(
        self, room: str, *, name: str | None = None, members: Sequence[str] = ()
    ) -> RoomInfo:
        """Create a group room owned by the user (raises `Conflict` if the id is taken)."""
        payload: dict[str, Any] = {"id": room, "members": list(members)}
        if name is not None:
            payload["name"] = name
        return _room(await self.call("POST", "/api/rooms", payload))

    async def add_member(self, room: str, user: str) -> RoomInfo:
        return _room(await self.call("POST", f"/api/rooms/{_path(room)}/members", {"user": user}))

    async def remove_member(self, room: str, user: str) -> None:
        await self.call("DELETE", f"/api/rooms/{_path(room)}/members/{quote(user, safe='')}")

    async def messages(
        self, room: str, *, before: int | None = None, limit: int | None = None
    ) -> HistoryPage:
        params = {k: str(v) for k, v in (("before", before), ("limit", limit)) if v is not None}
        body = await self.call("GET", f"/api/rooms/{_path(room)}/messages", params=params)
        if not isinstance(body, dict):
            raise ProtocolViolation("a history page must be an object")
        return parse_history(body)

    async def post_message(self, room: str, body: str, *, client_id: str | None = None) -> Ack:
        """Send over REST (same idempotency as the socket: a retry returns the original ack)."""
        payload = {"client_id": client_id or uuid.uuid4().hex, "body": body}
        answer = await self.call("POST", f"/api/rooms/{_path(room)}/messages", payload)
        if not isinstance(answer, dict):
            raise ProtocolViolation("an ack must be an object")
        return parse_ack(answer)


async def dev_token(url: str, user: str, session: aiohttp.ClientSession | None = None) -> str:
    """A token for `user` from a development node (`POST /api/dev/token`).

    Only nodes started with `--dev` serve it; the node also seats the user in
    the room `general`. Usable as a token provider:
    `Client(url, lambda: dev_token(url, "alice"))`.
    """
    endpoint = Endpoints.from_url(url).http + "/api/dev/token"
    own = session is None
    http = session or aiohttp.ClientSession()
    try:
        async with http.post(endpoint, json={"user": user}) as resp:
            if resp.status >= 400:
                raise await _error(resp)
            body = await resp.json(content_type=None)
    finally:
        if own:
            await http.close()
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str):
        raise ProtocolViolation("POST /api/dev/token must answer {token}")
    return token
