"""What the client hands to the application: frozen values, parsed from frames.

Every server frame is checked here, once, and turned into one of these; past
this module nothing looks at a `dict`. Parsing is pure (no I/O), so each rule
can be tested with literal frames.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

from parley.client.errors import ProtocolViolation


class ConnectionState(enum.StrEnum):
    """Where the connection is, for UIs (`Client.state`, `StateChanged` events).

    `closed` is both "not started yet" and "stopped for good"; a client that
    lost its connection and is trying again is `reconnecting`, never `closed`.
    """

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class PresenceStatus(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message. Within a room, `seq` orders messages (gaps are normal)."""

    room: str
    id: str
    seq: int
    sender: str
    body: str
    ts: dt.datetime
    client_id: str


@dataclass(frozen=True, slots=True)
class Typing:
    """`user` is typing in `room` (the server does not echo one's own typing)."""

    room: str
    user: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """`user` has read `room` up to `seq`."""

    room: str
    user: str
    seq: int


@dataclass(frozen=True, slots=True)
class Presence:
    """`user`, who shares a room with us, came online or went offline.

    After each `Connected`, the server sends `online` for every such user
    online now: a UI should forget what it knew when it sees `Connected`.
    """

    user: str
    status: PresenceStatus

    @property
    def online(self) -> bool:
        return self.status is PresenceStatus.ONLINE


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection is open (`hello` received); `reconnect` is False only the first time."""

    user: str
    session: str
    server: str
    rooms: tuple[str, ...]
    reconnect: bool


@dataclass(frozen=True, slots=True)
class StateChanged:
    state: ConnectionState
    previous: ConnectionState


@dataclass(frozen=True, slots=True)
class Subscribed:
    """A room was joined (`resumed`: again, after a reconnect); its messages follow."""

    room: str
    head: int
    resumed: bool


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """The server ended a subscription: the user was removed from the room."""

    room: str


@dataclass(frozen=True, slots=True)
class Replaced:
    """Close 4409: a newer connection of the same device took over. The client stops."""

    reason: str


@dataclass(frozen=True, slots=True)
class ServerErrorEvent:
    """An `error` frame that answers no pending call (e.g. a `typing` to a foreign room)."""

    code: str
    message: str
    ref: str | None


Event = (
    Message
    | Typing
    | Receipt
    | Presence
    | Connected
    | StateChanged
    | Subscribed
    | Unsubscribed
    | Replaced
    | ServerErrorEvent
)


@dataclass(frozen=True, slots=True)
class Ack:
    """The server's answer to a send: the message is durable, with this id and seq."""

    room: str
    client_id: str
    id: str
    seq: int
    ts: dt.datetime


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Messages oldest first; `has_more` says whether older ones exist."""

    room: str
    messages: tuple[Message, ...]
    has_more: bool


@dataclass(frozen=True, slots=True)
class Subscription:
    """What `Client.subscribe` answers once the room is joined.

    `oldest` is the seq of the first message the subscription delivered (pass
    it as `before` to `Client.history` to page further back), `has_more`
    whether older messages exist before it.
    """

    room: str
    head: int
    oldest: int | None
    has_more: bool


# Parsing -----------------------------------------------------------------------


def _text(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise ProtocolViolation(f"{obj.get('type', 'frame')}: field {name!r} must be a string")
    return value


def _int(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolViolation(f"{obj.get('type', 'frame')}: field {name!r} must be an integer")
    return value


def _bool(obj: dict[str, Any], name: str) -> bool:
    value = obj.get(name)
    if not isinstance(value, bool):
        raise ProtocolViolation(f"{obj.get('type', 'frame')}: field {name!r} must be a boolean")
    return value


def parse_ts(value: str) -> dt.datetime:
    """RFC 3339 (`2026-11-26T06:00:00.123Z`) to an aware UTC datetime."""
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ProtocolViolation(f"not an RFC 3339 time: {value[:40]!r}") from None
    if moment.tzinfo is None:
        raise ProtocolViolation(f"time without a zone: {value[:40]!r}")
    return moment.astimezone(dt.UTC)


def parse_message(obj: dict[str, Any]) -> Message:
    return Message(
        room=_text(obj, "room"),
        id=_text(obj, "id"),
        seq=_int(obj, "seq"),
        sender=_text(obj, "sender"),
        body=_text(obj, "body"),
        ts=parse_ts(_text(obj, "ts")),
        client_id=_text(obj, "client_id"),
    )


def parse_history(obj: dict[str, Any]) -> HistoryPage:
    raw = obj.get("messages")
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise ProtocolViolation("history: messages must be a list of objects")
    room = _text(obj, "room")
    return HistoryPage(
        room, tuple(parse_message({"room": room, **m}) for m in raw), _bool(obj, "has_more")
    )


def parse_ack(obj: dict[str, Any]) -> Ack:
    return Ack(
        room=_text(obj, "room"),
        client_id=_text(obj, "client_id"),
        id=_text(obj, "id"),
        seq=_int(obj, "seq"),
        ts=parse_ts(_text(obj, "ts")),
    )


def parse_hello(obj: dict[str, Any], reconnect: bool) -> Connected:
    rooms = obj.get("rooms")
    if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
        raise ProtocolViolation("hello: rooms must be a list of strings")
    return Connected(
        user=_text(obj, "user"),
        session=_text(obj, "session"),
        server=_text(obj, "server"),
        rooms=tuple(rooms),
        reconnect=reconnect,
    )


def parse_presence(obj: dict[str, Any]) -> Presence:
    status = _text(obj, "status")
    try:
        return Presence(_text(obj, "user"), PresenceStatus(status))
    except ValueError:
        raise ProtocolViolation(f"presence: unknown status {status[:20]!r}") from None


def parse_typing(obj: dict[str, Any]) -> Typing:
    return Typing(_text(obj, "room"), _text(obj, "user"))


def parse_receipt(obj: dict[str, Any]) -> Receipt:
    return Receipt(_text(obj, "room"), _text(obj, "user"), _int(obj, "seq"))
