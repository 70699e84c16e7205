"""One client connection's state: who it is, what it subscribed, what it was given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from parley.gateway.writer import SessionWriter
from parley.protocol.messages import ChatMessage


@dataclass(slots=True)
class Subscription:
    """A session's view of one room.

    `last_seq` is the highest seq this session was given: anything at or below
    it is a redelivery and is dropped, which makes every re-read harmless.
    While `joining`, live messages wait in `buffer` until the history reply
    has gone out (the subscribe race: no gap, no duplicate).
    """

    last_seq: int = -1
    joining: bool = True
    buffer: list[ChatMessage] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Session:
    id: str
    user: str
    device: str | None
    writer: SessionWriter
    close: Callable[[int, str], None]  # asks the connection to close with a code
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    # The device claim of this session was read back from the log: a later
    # claim for the same device replaces it (see Node.on_device_claim).
    claim_seen: bool = False
    closing: bool = False

    def __hash__(self) -> int:
        return id(self)
