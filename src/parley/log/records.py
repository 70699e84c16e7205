"""What Parley writes to its log: chat messages and ephemeral events.

Topics (names get the deployment's prefix):
- `<prefix>.messages`: chat messages, key = room id, so a room is one
  partition and its order is the partition's order; seq = offset. A room's
  removals are written there too (`Removal`), so that every node reads one
  before any message sent after it was answered; readers of messages skip it.
- `<prefix>.events`: typing, receipts, presence, membership changes,
  device claims and fan-out latency reports; short retention, never stored. Keyed by room for room
  events, by node for presence and heartbeats, by user for device claims,
  so each sequence that must stay in order shares a partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from parley.log.base import LogRecord, TopicSpec
from parley.protocol.messages import TS_BITS, ChatMessage, message_id


def messages_topic(prefix: str) -> str:
    return f"{prefix}.messages"


def events_topic(prefix: str) -> str:
    return f"{prefix}.events"


EVENTS_RETENTION_MS = 3600 * 1000
EVENT_PARTITIONS = 4


def messages_spec(prefix: str, partitions: int, retention_ms: int) -> TopicSpec:
    return TopicSpec(messages_topic(prefix), partitions, retention_ms)


def events_spec(prefix: str) -> TopicSpec:
    return TopicSpec(events_topic(prefix), EVENT_PARTITIONS, EVENTS_RETENTION_MS, durable=False)


def encode_message(sender: str, client_id: str, body: str, ts_ms: int) -> bytes:
    return orjson.dumps({"s": sender, "c": client_id, "b": body, "t": ts_ms})


def decode_message(record: LogRecord) -> ChatMessage | None:
    """The message a record holds, or None for a record that is not one (skipped)."""
    try:
        obj = orjson.loads(record.value)
        room = (record.key or b"").decode()
        sender, body, client_id, ts = obj["s"], obj["b"], obj["c"], obj["t"]
    except (orjson.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        return None
    if not (
        isinstance(sender, str)
        and isinstance(body, str)
        and isinstance(client_id, str)
        and isinstance(ts, int)
        and 0 <= ts < 1 << TS_BITS
        and room
    ):
        return None  # not written by Parley: skipped by every reader alike
    return ChatMessage(
        room=room,
        id=message_id(record.partition, record.offset),
        seq=record.offset,
        sender=sender,
        body=body,
        ts_ms=ts,
        client_id=client_id,
    )


@dataclass(slots=True, frozen=True)
class Removal:
    """A member removed from a room, in the room's partition of the messages topic.

    The `member` event (events topic) tells every node's membership cache; this
    record puts the removal in the room's own order, so a node holds the
    user's deliveries before it reads any message sent after the removal was
    answered, however far its reader of the events topic lags.
    """

    room: str
    user: str
    node: str


def encode_removal(user: str, node: str) -> bytes:
    return orjson.dumps({"removed": user, "n": node})


def decode_removal(record: LogRecord) -> Removal | None:
    """The removal a record holds, or None (a message, or not written by Parley)."""
    try:
        obj = orjson.loads(record.value)
        room = (record.key or b"").decode()
        user, node = obj["removed"], obj["n"]
    except (orjson.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        return None
    if not (isinstance(user, str) and isinstance(node, str) and room and user):
        return None
    return Removal(room, user, node)


# Bounds (ms) of the produce → fan-out latency histogram that gateways report
# in `fanout` events and the analytics worker adds up; one more bucket is +Inf.
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)


@dataclass(slots=True, frozen=True)
class Event:
    """One ephemeral event; `kind` picks which fields matter."""

    kind: str  # typing | receipt | presence | heartbeat | member | device | fanout
    room: str = ""
    user: str = ""
    node: str = ""
    seq: int = -1
    status: str = ""
    users: tuple[str, ...] = ()
    device: str = ""
    session: str = ""
    values: tuple[int, ...] = ()  # fanout: a latency histogram (LATENCY_BUCKETS_MS), then its sum

    def presence_users(self) -> tuple[str, ...]:
        """Whose status a presence event sets: its `user`, or its `users` when a
        node batched the changes of one loop turn (a connect storm)."""
        return self.users or ((self.user,) if self.user else ())

    def key(self) -> str:
        if self.kind in ("typing", "receipt", "member", "fanout"):
            return self.room
        if self.kind in ("heartbeat", "presence"):
            # One node's presence events and heartbeats share a partition, so
            # they are read in the order the node sent them.
            return self.node
        return self.user

    def encode(self) -> bytes:
        obj: dict[str, Any] = {"k": self.kind}
        for name in ("room", "user", "node", "status", "device", "session"):
            value = getattr(self, name)
            if value:
                obj[name] = value
        if self.seq >= 0:
            obj["seq"] = self.seq
        if self.users:
            obj["users"] = list(self.users)
        if self.values:
            obj["v"] = list(self.values)
        return orjson.dumps(obj)


def decode_event(record: LogRecord) -> Event | None:
    try:
        obj = orjson.loads(record.value)
        return Event(
            kind=str(obj["k"]),
            room=str(obj.get("room", "")),
            user=str(obj.get("user", "")),
            node=str(obj.get("node", "")),
            seq=int(obj.get("seq", -1)),
            status=str(obj.get("status", "")),
            users=tuple(str(u) for u in obj.get("users", ())),
            device=str(obj.get("device", "")),
            session=str(obj.get("session", "")),
            values=tuple(int(v) for v in obj.get("v", ())),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
